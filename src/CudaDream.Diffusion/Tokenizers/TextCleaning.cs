namespace CudaDream.Diffusion.Tokenizers;

/// <summary>How a prompt is cleaned before CLIP's pre-tokenizer sees it. transformers' CLIPTokenizer picks
/// one of two paths depending on whether the ftfy package is importable; both lower-case and NFC-normalise.</summary>
public enum TextCleaning
{
    /// <summary>
    /// The path taken where ftfy is installed (A1111, most diffusers environments): ftfy.fix_text, whitespace
    /// collapsed, lower case. <see cref="FixTextCleaner"/> implements fix_text's deterministic fixes (HTML
    /// entities, terminal escapes, ligatures, character width, curly quotes, control characters, NFC) but not
    /// its heuristic mojibake repair. The default.
    /// </summary>
    FixText,

    /// <summary>
    /// The path taken without ftfy, which the sd-tiny pipeline references recorded: transformers'
    /// BasicTokenizer(strip_accents=False, do_split_on_punc=False) — control characters dropped, spaces put
    /// around CJK ideographs, NFC, lower case, words joined by single spaces.
    /// </summary>
    Basic,
}

internal static class TextCleaners
{
    public static string Clean(string text, TextCleaning cleaning) => cleaning switch
    {
        TextCleaning.FixText => FixTextCleaner.Clean(text),
        TextCleaning.Basic => BasicTextCleaner.Clean(text),
        _ => throw new ArgumentOutOfRangeException(nameof(cleaning), cleaning, null),
    };
}
