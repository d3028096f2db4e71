using System.Text;
using System.Text.Json;
using CudaDream.Diffusion.Tokenizers;
using CudaDream.Engine.Formats;

namespace CudaDream.Diffusion.Pretraining;

/// <summary>
/// A small CLIP tokenizer trained on a word list, in the files CLIP's tokenizer reads (vocab.json, merges.txt,
/// tokenizer_config.json, special_tokens_map.json): the 256 byte-level symbols and their word-final "&lt;/w&gt;" forms
/// (so any text still tokenizes, one symbol per byte at worst), then byte-pair merges learned as Sennrich et al. 2016
/// (§3.1) do — repeatedly merge the most frequent adjacent pair, ties broken by the pair's text — until every word of
/// the list is one token, then &lt;|startoftext|&gt; and &lt;|endoftext|&gt; last, as in CLIP's own vocabulary.
/// </summary>
public static class CaptionVocabulary
{
    public const string StartOfText = "<|startoftext|>";
    public const string EndOfText = "<|endoftext|>";

    public sealed record Vocabulary(IReadOnlyList<string> Tokens, IReadOnlyList<(string Left, string Right)> Merges)
    {
        public int StartId => Tokens.Count - 2;
        public int EndId => Tokens.Count - 1;
    }

    public static Vocabulary Train(IEnumerable<string> words)
    {
        var tokens = new List<string>();
        foreach (var c in ByteLevelAlphabet.ByteToChar) tokens.Add(c.ToString());
        foreach (var c in ByteLevelAlphabet.ByteToChar) tokens.Add(c + "</w>");
        var known = new HashSet<string>(tokens, StringComparer.Ordinal);
        // Every word as its byte-level symbols, the last carrying the end-of-word mark.
        var pieces = words.Select(w => w.ToLowerInvariant()).Distinct(StringComparer.Ordinal).OrderBy(w => w, StringComparer.Ordinal)
            .Select(w =>
            {
                var symbols = ByteLevelAlphabet.Encode(w).Select(c => c.ToString()).ToList();
                symbols[^1] += "</w>";
                return symbols;
            }).ToList();
        var merges = new List<(string, string)>();
        while (true)
        {
            var counts = new Dictionary<(string, string), int>();
            foreach (var p in pieces)
                for (int i = 0; i + 1 < p.Count; i++)
                    counts[(p[i], p[i + 1])] = counts.GetValueOrDefault((p[i], p[i + 1])) + 1;
            if (counts.Count == 0) break;
            var best = counts.OrderByDescending(kv => kv.Value).ThenBy(kv => kv.Key.Item1 + " " + kv.Key.Item2, StringComparer.Ordinal).First().Key;
            merges.Add(best);
            string merged = best.Item1 + best.Item2;
            if (known.Add(merged)) tokens.Add(merged);
            foreach (var p in pieces)
                for (int i = 0; i + 1 < p.Count; i++)
                    if (p[i] == best.Item1 && p[i + 1] == best.Item2)
                    {
                        p[i] = merged;
                        p.RemoveAt(i + 1);
                    }
        }
        tokens.Add(StartOfText);
        tokens.Add(EndOfText);
        return new Vocabulary(tokens, merges);
    }

    /// <summary>Writes the tokenizer folder (each file atomically).</summary>
    public static void Write(Vocabulary v, string dir)
    {
        Directory.CreateDirectory(dir);
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < v.Tokens.Count; i++) vocab[v.Tokens[i]] = i;
        AtomicFile.WriteAllText(Path.Combine(dir, "vocab.json"), JsonSerializer.Serialize(vocab));
        var merges = new StringBuilder("#version: 0.2\n");
        foreach (var (l, r) in v.Merges) merges.Append(l).Append(' ').Append(r).Append('\n');
        AtomicFile.WriteAllText(Path.Combine(dir, "merges.txt"), merges.ToString());
        static object Token(string content) => new { __type = "AddedToken", content, lstrip = false, normalized = true, rstrip = false, single_word = false };
        AtomicFile.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["bos_token"] = Token(StartOfText), ["eos_token"] = Token(EndOfText), ["unk_token"] = Token(EndOfText), ["pad_token"] = EndOfText,
            ["model_max_length"] = 77, ["tokenizer_class"] = "CLIPTokenizer", ["do_lower_case"] = true, ["errors"] = "replace",
        }, new JsonSerializerOptions { WriteIndented = true }));
        AtomicFile.WriteAllText(Path.Combine(dir, "special_tokens_map.json"), JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["bos_token"] = StartOfText, ["eos_token"] = EndOfText, ["unk_token"] = EndOfText, ["pad_token"] = EndOfText,
        }, new JsonSerializerOptions { WriteIndented = true }));
    }
}
