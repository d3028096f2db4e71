using System.Globalization;
using System.Text;

namespace CudaDream.Diffusion.Tokenizers;

/// <summary>
/// transformers' BasicTokenizer as CLIPTokenizer configures it when ftfy is missing
/// (do_lower_case, tokenize_chinese_chars, strip_accents=False, do_split_on_punc=False), returning
/// <c>" ".join(tokens)</c> — the string CLIPTokenizer._tokenize hands to CLIP's regex.
/// </summary>
internal static class BasicTextCleaner
{
    public static string Clean(string text)
    {
        var cleaned = new StringBuilder(text.Length + 8);
        foreach (var rune in text.EnumerateRunes())
        {
            int cp = rune.Value;
            if (cp == 0 || cp == 0xFFFD || IsControl(cp)) continue;
            if (IsWhitespace(cp)) cleaned.Append(' ');
            else if (IsCjkIdeograph(cp)) cleaned.Append(' ').Append(rune.ToString()).Append(' ');
            else cleaned.Append(rune.ToString());
        }
        var words = PythonText.SplitOnSpace(Nfc.Normalize(cleaned.ToString()));
        for (int i = 0; i < words.Count; i++) words[i] = PythonText.Lower(words[i]);
        return string.Join(' ', words);
    }

    private static bool IsWhitespace(int cp) =>
        cp is ' ' or '\t' or '\n' or '\r' || PythonText.Category(cp) == UnicodeCategory.SpaceSeparator;

    /// <summary>Categories C* except tab and line breaks (which count as whitespace).</summary>
    private static bool IsControl(int cp) => cp is not ('\t' or '\n' or '\r') && PythonText.Category(cp) is
        UnicodeCategory.Control or UnicodeCategory.Format or UnicodeCategory.Surrogate
        or UnicodeCategory.PrivateUse or UnicodeCategory.OtherNotAssigned;

    /// <summary>The CJK Unified Ideographs blocks BERT's tokenizer pads with spaces (not kana, not hangul).</summary>
    private static bool IsCjkIdeograph(int cp) => cp is (>= 0x4E00 and <= 0x9FFF) or (>= 0x3400 and <= 0x4DBF)
        or (>= 0x20000 and <= 0x2A6DF) or (>= 0x2A700 and <= 0x2B73F) or (>= 0x2B740 and <= 0x2B81F)
        or (>= 0x2B820 and <= 0x2CEAF) or (>= 0xF900 and <= 0xFAFF) or (>= 0x2F800 and <= 0x2FA1F);
}
