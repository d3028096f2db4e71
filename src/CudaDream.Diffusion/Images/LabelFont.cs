using SkiaSharp;

namespace CudaDream.Diffusion.Images;

/// <summary>
/// A font for labels that is there when the machine has one and absent (null) otherwise: a minimal
/// container may have no font at all, and a missing label must never cost a training run its images.
/// </summary>
internal static class LabelFont
{
    private static readonly string[] Families = ["DejaVu Sans", "Liberation Sans", "Arial", "Helvetica", "Noto Sans", "FreeSans"];
    private static readonly string[] Files =
    [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
        @"C:\Windows\Fonts\arial.ttf",
        "/System/Library/Fonts/Supplemental/Arial.ttf",
        "/Library/Fonts/Arial.ttf",
    ];

    private static readonly Lazy<SKTypeface?> Typeface = new(Find);

    /// <summary>Whether this machine has a font labels can use.</summary>
    public static bool IsAvailable => Typeface.Value != null;

    public static SKFont? Create(float size) => Typeface.Value is { } typeface ? new SKFont(typeface, size) { Subpixel = true } : null;

    private static SKTypeface? Find()
    {
        try
        {
            foreach (var candidate in Candidates())
                if (candidate is { GlyphCount: > 0 } && candidate.ContainsGlyphs("Aa0")) return candidate;
        }
        catch (Exception e) when (e is DllNotFoundException or TypeInitializationException or IOException)
        {
            // No usable font machinery: labels are skipped.
        }
        return null;
    }

    private static IEnumerable<SKTypeface?> Candidates()
    {
        foreach (var family in Families) yield return SKFontManager.Default.MatchFamily(family);
        foreach (var file in Files) if (File.Exists(file)) yield return SKTypeface.FromFile(file);
        yield return SKTypeface.Default;
    }

    /// <summary>The longest prefix of the text (ending in "…" when cut) that fits in maxWidth pixels.</summary>
    /// <summary>
    /// Word-wrapped lines of at most <paramref name="maxWidth"/> pixels, at most <paramref name="maxLines"/> of them (the
    /// last one shortened with "…" only when the text needs more); a word wider than a line is cut with "…".
    /// </summary>
    public static IReadOnlyList<string> Wrap(SKFont font, string text, float maxWidth, int maxLines = 3)
    {
        var words = text.ReplaceLineEndings(" ").Split(' ', StringSplitOptions.RemoveEmptyEntries);
        var lines = new List<string>();
        var line = "";
        for (int w = 0; w < words.Length; w++)
        {
            string candidate = line.Length == 0 ? words[w] : line + " " + words[w];
            if (font.MeasureText(candidate) <= maxWidth) { line = candidate; continue; }
            if (line.Length > 0) lines.Add(line);
            line = words[w];
            if (lines.Count == maxLines - 1)
            {
                lines.Add(Fit(font, string.Join(' ', words[w..]), maxWidth));
                return lines;
            }
        }
        if (line.Length > 0) lines.Add(Fit(font, line, maxWidth));
        return lines;
    }

    public static string Fit(SKFont font, string text, float maxWidth)
    {
        text = text.ReplaceLineEndings(" ");
        if (font.MeasureText(text) <= maxWidth) return text;
        int lo = 0, hi = text.Length;
        while (lo < hi)
        {
            int mid = (lo + hi + 1) / 2;
            if (font.MeasureText(text[..mid] + "…") <= maxWidth) lo = mid; else hi = mid - 1;
        }
        return lo == 0 ? "" : text[..lo].TrimEnd() + "…";
    }
}
