using System.Globalization;
using System.Text;

namespace CudaDream.Diffusion.Tokenizers;

/// <summary>
/// The few Python string semantics the CLIP tokenizer depends on, written out because .NET's differ:
/// str.lower() (full mapping: U+0130 and final sigma), str.isspace()/str.split(), the regex module's \s,
/// and unicodedata categories read per code point (Python strings are code points, .NET's are UTF-16).
/// </summary>
internal static class PythonText
{
    /// <summary>Python's str.lower(): simple lower-case mapping plus SpecialCasing's U+0130 and Final_Sigma.</summary>
    public static string Lower(string text)
    {
        var runes = new List<Rune>(text.Length);
        foreach (var r in text.EnumerateRunes()) runes.Add(r);
        var sb = new StringBuilder(text.Length);
        for (int i = 0; i < runes.Count; i++)
        {
            int cp = runes[i].Value;
            if (cp == 0x0130) sb.Append("i\u0307");
            else if (cp == 0x03A3) sb.Append(IsFinalSigma(runes, i) ? 'ς' : 'σ');
            else sb.Append(Rune.ToLowerInvariant(runes[i]).ToString());
        }
        return sb.ToString();
    }

    /// <summary>Final_Sigma: a cased letter before (skipping case-ignorables) and none after.</summary>
    private static bool IsFinalSigma(List<Rune> runes, int index)
    {
        int j = index - 1;
        while (j >= 0 && IsCaseIgnorable(runes[j])) j--;
        if (j < 0 || !IsCased(runes[j])) return false;
        int k = index + 1;
        while (k < runes.Count && IsCaseIgnorable(runes[k])) k++;
        return k >= runes.Count || !IsCased(runes[k]);
    }

    private static bool IsCased(Rune r) => Rune.GetUnicodeCategory(r) is
        UnicodeCategory.UppercaseLetter or UnicodeCategory.LowercaseLetter or UnicodeCategory.TitlecaseLetter;

    private static bool IsCaseIgnorable(Rune r) =>
        Rune.GetUnicodeCategory(r) is UnicodeCategory.NonSpacingMark or UnicodeCategory.EnclosingMark
            or UnicodeCategory.Format or UnicodeCategory.ModifierLetter or UnicodeCategory.ModifierSymbol
        || r.Value is '\'' or '.' or ':' or 0x00B7 or 0x0387 or 0x05F4 or 0x2018 or 0x2019 or 0x2024 or 0x2027
            or 0xFE13 or 0xFE52 or 0xFE55 or 0xFF07 or 0xFF0E or 0xFF1A;

    /// <summary>The Unicode White_Space property: what the regex module's \s matches in CLIP's patterns.</summary>
    public static bool IsWhiteSpace(int cp) => cp is (>= 0x09 and <= 0x0D) or 0x20 or 0x85 or 0xA0 or 0x1680
        or (>= 0x2000 and <= 0x200A) or 0x2028 or 0x2029 or 0x202F or 0x205F or 0x3000;

    /// <summary>Python's str.isspace(), which str.split() and str.strip() use: White_Space plus U+001C..U+001F.</summary>
    public static bool IsSpace(int cp) => IsWhiteSpace(cp) || cp is >= 0x1C and <= 0x1F;

    public static UnicodeCategory Category(int cp) => Rune.IsValid(cp)
        ? Rune.GetUnicodeCategory(new Rune(cp))
        : UnicodeCategory.Surrogate;

    public static bool IsLetter(int cp) => Category(cp) is UnicodeCategory.UppercaseLetter or UnicodeCategory.LowercaseLetter
        or UnicodeCategory.TitlecaseLetter or UnicodeCategory.ModifierLetter or UnicodeCategory.OtherLetter;

    public static bool IsNumber(int cp) => Category(cp) is UnicodeCategory.DecimalDigitNumber
        or UnicodeCategory.LetterNumber or UnicodeCategory.OtherNumber;

    /// <summary>Splits on runs of <see cref="IsSpace"/> and drops empty pieces, like str.split().</summary>
    public static List<string> SplitOnSpace(string text)
    {
        var words = new List<string>();
        var current = new StringBuilder();
        foreach (var r in text.EnumerateRunes())
        {
            if (IsSpace(r.Value))
            {
                if (current.Length > 0) { words.Add(current.ToString()); current.Clear(); }
            }
            else current.Append(r.ToString());
        }
        if (current.Length > 0) words.Add(current.ToString());
        return words;
    }
}
