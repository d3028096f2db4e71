using System.Collections.Concurrent;

namespace CudaDream.Diffusion.Tokenizers;

/// <summary>
/// Byte-pair encoding of one word as CLIP does it (Sennrich et al. 2016, with CLIP's end-of-word marker):
/// the word's characters are the first symbols, the last one carrying "&lt;/w&gt;"; then, while any adjacent
/// pair is a known merge, the pair of lowest rank is merged everywhere, left to right without overlap.
/// </summary>
internal sealed class BpeMerger
{
    public const string EndOfWord = "</w>";
    private const int CacheLimit = 100_000;

    private readonly Dictionary<string, int> _symbolIds = new(StringComparer.Ordinal);
    private readonly List<string> _symbols = new();
    /// <summary>(left symbol, right symbol) → (rank, merged symbol).</summary>
    private readonly Dictionary<long, (int Rank, int Merged)> _merges = new();
    private readonly ConcurrentDictionary<string, string[]> _cache = new(StringComparer.Ordinal);

    public BpeMerger(IReadOnlyList<(string Left, string Right)> merges)
    {
        foreach (var c in ByteLevelAlphabet.ByteToChar)
        {
            Intern(c.ToString());
            Intern(c + EndOfWord);
        }
        for (int rank = 0; rank < merges.Count; rank++)
        {
            var (left, right) = merges[rank];
            long key = PairKey(Intern(left), Intern(right));
            _merges[key] = (rank, Intern(left + right)); // a repeated pair keeps its last rank, as dict(zip(merges, ranks)) does
        }
    }

    public int MergeCount => _merges.Count;

    private int Intern(string symbol)
    {
        if (_symbolIds.TryGetValue(symbol, out int id)) return id;
        id = _symbols.Count;
        _symbols.Add(symbol);
        _symbolIds.Add(symbol, id);
        return id;
    }

    private static long PairKey(int left, int right) => ((long)left << 32) | (uint)right;

    /// <summary>The BPE symbols of a byte-level word (see <see cref="ByteLevelAlphabet"/>), the last ending in "&lt;/w&gt;".</summary>
    public string[] Encode(string byteLevelWord)
    {
        if (byteLevelWord.Length == 0) return [];
        if (_cache.TryGetValue(byteLevelWord, out var cached)) return cached;

        var word = new List<int>(byteLevelWord.Length);
        for (int i = 0; i < byteLevelWord.Length - 1; i++) word.Add(_symbolIds[byteLevelWord[i].ToString()]);
        word.Add(_symbolIds[byteLevelWord[^1] + EndOfWord]);

        while (word.Count > 1 && LowestRankedPair(word) is var (left, right, merged))
        {
            var next = new List<int>(word.Count);
            for (int i = 0; i < word.Count; i++)
            {
                if (i < word.Count - 1 && word[i] == left && word[i + 1] == right) { next.Add(merged); i++; }
                else next.Add(word[i]);
            }
            word = next;
        }

        var symbols = word.Select(id => _symbols[id]).ToArray();
        if (_cache.Count >= CacheLimit) _cache.Clear();
        _cache.TryAdd(byteLevelWord, symbols);
        return symbols;
    }

    private (int Left, int Right, int Merged)? LowestRankedPair(List<int> word)
    {
        int bestRank = int.MaxValue, bestIndex = -1, bestMerged = 0;
        for (int i = 0; i < word.Count - 1; i++)
        {
            if (_merges.TryGetValue(PairKey(word[i], word[i + 1]), out var m) && m.Rank < bestRank)
            {
                bestRank = m.Rank;
                bestIndex = i;
                bestMerged = m.Merged;
            }
        }
        return bestIndex < 0 ? null : (word[bestIndex], word[bestIndex + 1], bestMerged);
    }
}
