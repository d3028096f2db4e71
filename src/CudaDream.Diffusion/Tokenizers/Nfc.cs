using System.Text;

namespace CudaDream.Diffusion.Tokenizers;

/// <summary>
/// Unicode Normalization Form C (UAX #15: canonical decomposition, canonical ordering, canonical
/// composition) over the tables in <see cref="UnicodeTables"/>. CudaDream runs with .NET's invariant
/// globalization, where <see cref="string.Normalize()"/> changes nothing, yet both of transformers'
/// CLIP cleaning paths normalise to NFC — so "cafe" + U+0301 must tokenize like "café".
/// </summary>
internal static class Nfc
{
    private const int SBase = 0xAC00, LBase = 0x1100, VBase = 0x1161, TBase = 0x11A7;
    private const int LCount = 19, VCount = 21, TCount = 28, NCount = VCount * TCount, SCount = LCount * NCount;

    public static string Normalize(string text)
    {
        if (IsTriviallyNormalized(text)) return text;
        var runes = new List<int>(text.Length);
        foreach (var rune in text.EnumerateRunes()) Decompose(rune.Value, runes);
        ReorderCombiningMarks(runes);
        Compose(runes);
        var sb = new StringBuilder(runes.Count);
        foreach (var cp in runes) sb.Append(char.ConvertFromUtf32(cp));
        return sb.ToString();
    }

    /// <summary>Text below U+0300 holds no combining mark and nothing that decomposes differently in NFC.</summary>
    private static bool IsTriviallyNormalized(string text)
    {
        foreach (var c in text) if (c >= 0x300) return false;
        return true;
    }

    public static int CombiningClass(int cp)
    {
        var runs = UnicodeTables.CombiningClassRuns;
        int lo = 0, hi = runs.Length / 3 - 1;
        while (lo <= hi)
        {
            int mid = (lo + hi) >>> 1;
            if (cp < runs[3 * mid]) hi = mid - 1;
            else if (cp > runs[3 * mid + 1]) lo = mid + 1;
            else return runs[3 * mid + 2];
        }
        return 0;
    }

    private static void Decompose(int cp, List<int> output)
    {
        int s = cp - SBase;
        if (s >= 0 && s < SCount)
        {
            output.Add(LBase + s / NCount);
            output.Add(VBase + s % NCount / TCount);
            if (s % TCount != 0) output.Add(TBase + s % TCount);
            return;
        }
        int i = Array.BinarySearch(UnicodeTables.DecompositionKeys, cp);
        if (i < 0) { output.Add(cp); return; }
        for (int k = UnicodeTables.DecompositionOffsets[i]; k < UnicodeTables.DecompositionOffsets[i + 1]; k++)
            output.Add(UnicodeTables.DecompositionData[k]);
    }

    /// <summary>Stable sort of every run of non-starters by combining class (insertion sort: runs are short).</summary>
    private static void ReorderCombiningMarks(List<int> runes)
    {
        for (int i = 1; i < runes.Count; i++)
        {
            int cc = CombiningClass(runes[i]);
            if (cc == 0) continue;
            int j = i;
            while (j > 0 && CombiningClass(runes[j - 1]) > cc)
            {
                (runes[j - 1], runes[j]) = (runes[j], runes[j - 1]);
                j--;
            }
        }
    }

    /// <summary>Canonical composition: a character joins the last starter unless a mark of equal or higher class sits between.</summary>
    private static void Compose(List<int> runes)
    {
        if (runes.Count == 0) return;
        int starterIndex = CombiningClass(runes[0]) == 0 ? 0 : -1;
        int lastClass = starterIndex == 0 ? 0 : 256;
        int write = 1;
        for (int read = 1; read < runes.Count; read++)
        {
            int cp = runes[read];
            int cc = CombiningClass(cp);
            bool blocked = lastClass != 0 && lastClass >= cc;
            if (starterIndex >= 0 && !blocked && TryCompose(runes[starterIndex], cp, out int composite))
            {
                runes[starterIndex] = composite;
                continue;
            }
            if (cc == 0) { starterIndex = write; lastClass = 0; }
            else lastClass = cc;
            runes[write++] = cp;
        }
        runes.RemoveRange(write, runes.Count - write);
    }

    private static bool TryCompose(int first, int second, out int composite)
    {
        int l = first - LBase, v = second - VBase;
        if (l >= 0 && l < LCount && v >= 0 && v < VCount) { composite = SBase + (l * VCount + v) * TCount; return true; }
        int s = first - SBase, t = second - TBase;
        if (s >= 0 && s < SCount && s % TCount == 0 && t > 0 && t < TCount) { composite = first + t; return true; }

        var table = UnicodeTables.Compositions;
        int lo = 0, hi = table.Length / 3 - 1;
        while (lo <= hi)
        {
            int mid = (lo + hi) >>> 1;
            int c = table[3 * mid].CompareTo(first);
            if (c == 0) c = table[3 * mid + 1].CompareTo(second);
            if (c == 0) { composite = table[3 * mid + 2]; return true; }
            if (c < 0) lo = mid + 1; else hi = mid - 1;
        }
        composite = 0;
        return false;
    }
}
