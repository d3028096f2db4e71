namespace CudaDream.Diffusion.Tokenizers;

/// <summary>
/// CLIP's word splitter, the regex
/// <c>&lt;\|startoftext\|&gt;|&lt;\|endoftext\|&gt;|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+</c>
/// (IGNORECASE, on lower-cased text), written as a scanner over code points: .NET's Regex sees UTF-16
/// units, so a letter outside the BMP would not be \p{L} to it, while Python's regex module matches it.
/// </summary>
internal static class ClipPreTokenizer
{
    private static readonly string[] SpecialWords = ["<|startoftext|>", "<|endoftext|>"];
    private static readonly string[] Contractions = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"];

    public static List<string> Split(string text)
    {
        var words = new List<string>();
        int i = 0;
        while (i < text.Length)
        {
            var match = MatchLiteral(text, i, SpecialWords) ?? MatchLiteral(text, i, Contractions);
            if (match != null) { words.Add(match); i += match.Length; continue; }

            int cp = CodePointAt(text, i, out int width);
            if (PythonText.IsLetter(cp)) { words.Add(Run(text, ref i, PythonText.IsLetter)); continue; }
            if (PythonText.IsNumber(cp)) { words.Add(text.Substring(i, width)); i += width; continue; }
            if (!PythonText.IsWhiteSpace(cp)) { words.Add(Run(text, ref i, IsOther)); continue; }
            i += width;
        }
        return words;
    }

    private static bool IsOther(int cp) => !PythonText.IsWhiteSpace(cp) && !PythonText.IsLetter(cp) && !PythonText.IsNumber(cp);

    private static string? MatchLiteral(string text, int at, string[] candidates)
    {
        foreach (var c in candidates)
            if (string.CompareOrdinal(text, at, c, 0, c.Length) == 0) return c;
        return null;
    }

    private static string Run(string text, ref int i, Func<int, bool> belongs)
    {
        int start = i;
        while (i < text.Length)
        {
            int cp = CodePointAt(text, i, out int width);
            if (!belongs(cp)) break;
            i += width;
        }
        return text[start..i];
    }

    /// <summary>The code point at <paramref name="index"/>; a lone surrogate reads as itself (category Cs).</summary>
    private static int CodePointAt(string text, int index, out int width)
    {
        if (char.IsHighSurrogate(text[index]) && index + 1 < text.Length && char.IsLowSurrogate(text[index + 1]))
        {
            width = 2;
            return char.ConvertToUtf32(text[index], text[index + 1]);
        }
        width = 1;
        return text[index];
    }
}
