using System.Globalization;
using System.Net;
using System.Text;
using System.Text.RegularExpressions;

namespace CudaDream.Diffusion.Tokenizers;

/// <summary>
/// CLIPTokenizer's ftfy path: <c>whitespace_clean(ftfy.fix_text(text)).lower()</c>. fix_text's default
/// fixes are applied in ftfy 6's order and repeated until the text stops changing, as ftfy's
/// fix_and_explain loop does (so a doubly escaped "&amp;amp;" ends as "&amp;"): HTML entities (skipped when the text holds a literal '&lt;', ftfy's "auto"),
/// Latin ligatures, fullwidth/halfwidth forms, curly quotes, terminal escapes, control characters, NFC.
/// Not done: ftfy's mojibake detection (fix_encoding, C1 controls as Windows-1252), which is a heuristic
/// over encoding tables; text that is not mojibake is unaffected by it.
/// </summary>
internal static partial class FixTextCleaner
{
    private const int MaxRounds = 16;

    public static string Clean(string text)
    {
        bool unescapeHtml = !text.Contains('<');
        for (int round = 0; round < MaxRounds; round++)
        {
            var before = text;
            if (unescapeHtml) text = UnescapeHtml(text);
            text = ReplaceLigaturesAndWidth(text);
            text = TerminalEscape().Replace(text, "");
            text = RemoveControlChars(text);
            text = Nfc.Normalize(text);
            if (text == before) break;
        }
        return PythonText.Lower(CollapseWhitespace(text));
    }

    [GeneratedRegex(@"\x1b\[[0-9;]*[a-zA-Z]")]
    private static partial Regex TerminalEscape();

    [GeneratedRegex(@"&#?[0-9A-Za-z]{1,24};")]
    private static partial Regex HtmlEntity();

    private static string UnescapeHtml(string text) =>
        text.Contains('&') ? HtmlEntity().Replace(text, m => DecodeEntity(m.Value)) : text;

    private static string DecodeEntity(string entity)
    {
        if (entity[1] != '#') return WebUtility.HtmlDecode(entity);
        bool hex = entity[2] is 'x' or 'X';
        var digits = entity.AsSpan(hex ? 3 : 2, entity.Length - (hex ? 4 : 3));
        if (!long.TryParse(digits, hex ? NumberStyles.AllowHexSpecifier : NumberStyles.None, CultureInfo.InvariantCulture, out long cp))
            return entity;
        return DecodeCharacterReference(cp);
    }

    /// <summary>Python's html.unescape rules for numeric references: NUL and surrogates become U+FFFD,
    /// 0x80–0x9F are read as Windows-1252, other invalid code points vanish.</summary>
    private static string DecodeCharacterReference(long cp)
    {
        if (cp == 0) return "\uFFFD";
        if (cp == 0x0D) return "\r";
        if (cp is >= 0x80 and <= 0x9F) return Windows1252High[(int)cp - 0x80].ToString();
        if (cp is >= 0xD800 and <= 0xDFFF || cp > 0x10FFFF) return "\uFFFD";
        if (cp is (>= 0x01 and <= 0x08) or 0x0B or (>= 0x0E and <= 0x1F) or 0x7F or (>= 0xFDD0 and <= 0xFDEF)
            || (cp & 0xFFFE) == 0xFFFE) return "";
        return char.ConvertFromUtf32((int)cp);
    }

    /// <summary>Windows-1252 bytes 0x80..0x9F (undefined ones keep their C1 code point).</summary>
    private const string Windows1252High =
        "\u20AC\u0081\u201A\u0192\u201E\u2026\u2020\u2021\u02C6\u2030\u0160\u2039\u0152\u008D\u017D\u008F" +
        "\u0090\u2018\u2019\u201C\u201D\u2022\u2013\u2014\u02DC\u2122\u0161\u203A\u0153\u009D\u017E\u0178";

    private static string ReplaceLigaturesAndWidth(string text)
    {
        StringBuilder? sb = null;
        int i = 0;
        foreach (var rune in text.EnumerateRunes())
        {
            var replacement = Replacement(rune.Value);
            if (replacement != null && sb == null) sb = new StringBuilder(text.Length).Append(text, 0, i);
            sb?.Append(replacement ?? rune.ToString());
            i += rune.Utf16SequenceLength;
        }
        return sb?.ToString() ?? text;
    }

    private static string? Replacement(int cp)
    {
        if (cp is 0x02BC or (>= 0x2018 and <= 0x201B)) return "'";
        if (cp is >= 0x201C and <= 0x201F) return "\"";
        if (Ligatures.TryGetValue(cp, out var letters)) return letters;
        if (cp == 0x3000 || cp is >= 0xFF01 and <= 0xFFEF)
        {
            int k = Array.BinarySearch(UnicodeTables.WidthKeys, cp);
            if (k >= 0) return UnicodeTables.WidthValues[k];
        }
        return null;
    }

    /// <summary>ftfy's fix_latin_ligatures table.</summary>
    private static readonly Dictionary<int, string> Ligatures = new()
    {
        [0x0132] = "IJ", [0x0133] = "ij", [0x0149] = "\u02BCn", [0x01F1] = "DZ", [0x01F2] = "Dz", [0x01F3] = "dz",
        [0x01C4] = "D\u017D", [0x01C5] = "D\u017E", [0x01C6] = "d\u017E", [0x01C7] = "LJ", [0x01C8] = "Lj",
        [0x01C9] = "lj", [0x01CA] = "NJ", [0x01CB] = "Nj", [0x01CC] = "nj", [0xFB00] = "ff", [0xFB01] = "fi",
        [0xFB02] = "fl", [0xFB03] = "ffi", [0xFB04] = "ffl", [0xFB05] = "\u017Ft", [0xFB06] = "st",
    };

    /// <summary>ftfy's remove_control_chars set: C0 controls but tab and line breaks, DEL, deprecated format
    /// characters, the byte-order mark, interlinear annotations, musical formatting and tag characters.</summary>
    private static bool IsRemovedControl(int cp) => cp is (>= 0x00 and <= 0x08) or 0x0B or (>= 0x0E and <= 0x1F)
        or 0x7F or (>= 0x206A and <= 0x206F) or 0xFEFF or (>= 0xFFF9 and <= 0xFFFC)
        or (>= 0x1D173 and <= 0x1D17A) or (>= 0xE0000 and <= 0xE007F);

    private static string RemoveControlChars(string text)
    {
        var sb = new StringBuilder(text.Length);
        foreach (var rune in text.EnumerateRunes())
            if (!IsRemovedControl(rune.Value)) sb.Append(rune.ToString());
        return sb.ToString();
    }

    /// <summary>CLIP's whitespace_clean: runs of \s become one space, ends stripped.</summary>
    private static string CollapseWhitespace(string text)
    {
        var sb = new StringBuilder(text.Length);
        bool pendingSpace = false;
        foreach (var rune in text.EnumerateRunes())
        {
            if (PythonText.IsSpace(rune.Value)) { pendingSpace = sb.Length > 0; continue; }
            if (pendingSpace) sb.Append(' ');
            pendingSpace = false;
            sb.Append(rune.ToString());
        }
        return sb.ToString();
    }
}
