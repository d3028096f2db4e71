using System.Text;
using CudaDream.Engine;
using CudaDream.Engine.Tensors;

namespace CudaDream.Diffusion.Tokenizers;

/// <summary>Options of <see cref="ClipTokenizer.FromFolder"/>.</summary>
public sealed record ClipTokenizerOptions
{
    /// <summary>Which of transformers' two cleaning paths to follow (see <see cref="TextCleaning"/>).</summary>
    public TextCleaning Cleaning { get; init; } = TextCleaning.FixText;

    /// <summary>Overrides tokenizer_config.json's model_max_length (77 for every SD text encoder).</summary>
    public int? MaxLength { get; init; }
}

/// <summary>One prompt tokenized the way a diffusers pipeline feeds its text encoder.</summary>
/// <param name="Ids">bos, the prompt's tokens, eos: neither truncated nor padded.</param>
/// <param name="Tokens">The vocabulary string of each entry of <paramref name="Ids"/> (byte-level, "&lt;/w&gt;" ends a word).</param>
/// <param name="InputIds">The text encoder's input: bos + at most MaxLength−2 tokens + eos, padded with the pad id to MaxLength
/// (transformers' <c>padding="max_length", truncation=True</c>).</param>
/// <param name="Truncated">Whether tokens were cut off to fit MaxLength.</param>
/// <param name="TruncatedText">The cut-off tokens decoded back to text, as diffusers reports them; null when nothing was cut.</param>
/// <param name="TruncationWarning">diffusers' warning naming the cut-off text; null when nothing was cut.</param>
public sealed record TokenizedPrompt(int[] Ids, string[] Tokens, int[] InputIds, bool Truncated, string? TruncatedText, string? TruncationWarning);

/// <summary>
/// CLIP's byte-level BPE tokenizer as Stable Diffusion pipelines use it (transformers' CLIPTokenizer):
/// special tokens split out of the raw text, each remaining part cleaned (<see cref="TextCleaning"/>),
/// split into words by CLIP's pattern, each word's UTF-8 bytes mapped to printable characters and
/// merged by BPE, symbols looked up in vocab.json (unknown → unk). Immutable and thread-safe.
/// </summary>
public sealed class ClipTokenizer
{
    public const int DefaultMaxLength = 77;
    /// <summary>transformers writes model_max_length = 1e30 for "no limit"; no CLIP text encoder takes more than this.</summary>
    private const int MaxSupportedLength = 4096;

    private readonly Dictionary<string, int> _vocab;
    private readonly Dictionary<int, string> _tokens;
    private readonly BpeMerger _bpe;
    /// <summary>Special-token strings split out of the text before cleaning, longest first.</summary>
    private readonly (string Content, int Id)[] _specialTokens;
    private readonly bool _cleanUpTokenizationSpaces;

    public string Directory { get; }
    public TextCleaning Cleaning { get; }
    public int MaxLength { get; }
    public int BosId { get; }
    public int EosId { get; }
    public int PadId { get; }
    public int UnkId { get; }
    public string BosToken { get; }
    public string EosToken { get; }
    public string PadToken { get; }
    public string UnkToken { get; }
    /// <summary>One more than the largest token id.</summary>
    public int VocabSize { get; }
    public int MergeCount => _bpe.MergeCount;

    private ClipTokenizer(string directory, Dictionary<string, int> vocab, BpeMerger bpe, SpecialTokens special,
        int maxLength, bool cleanUp, TextCleaning cleaning)
    {
        Directory = directory;
        _vocab = vocab;
        _bpe = bpe;
        _tokens = new Dictionary<int, string>(vocab.Count);
        foreach (var (token, id) in vocab) _tokens.TryAdd(id, token);
        foreach (var (content, id) in special.All) _tokens.TryAdd(id, content);
        _specialTokens = special.All.DistinctBy(s => s.Content).OrderByDescending(s => s.Content.Length).ToArray();
        (BosToken, BosId) = special.Bos;
        (EosToken, EosId) = special.Eos;
        (PadToken, PadId) = special.Pad;
        (UnkToken, UnkId) = special.Unk;
        VocabSize = _tokens.Keys.Max() + 1;
        MaxLength = maxLength;
        _cleanUpTokenizationSpaces = cleanUp;
        Cleaning = cleaning;
    }

    private sealed record SpecialTokens((string, int) Bos, (string, int) Eos, (string, int) Pad, (string, int) Unk, (string, int)[] Additional)
    {
        public IEnumerable<(string Content, int Id)> All => new[] { Bos, Eos, Pad, Unk }.Concat(Additional);
    }

    /// <summary>
    /// Loads the tokenizer of a diffusers model folder (reads DIR/tokenizer/) or of a tokenizer folder itself:
    /// vocab.json and merges.txt, plus tokenizer_config.json (model_max_length, special tokens) and
    /// special_tokens_map.json (which takes precedence, as in transformers) when present.
    /// </summary>
    public static ClipTokenizer FromFolder(string directory, ClipTokenizerOptions? options = null)
    {
        options ??= new ClipTokenizerOptions();
        var dir = ResolveFolder(directory);
        var vocabPath = Path.Combine(dir, "vocab.json");
        var configPath = Path.Combine(dir, "tokenizer_config.json");
        var mapPath = Path.Combine(dir, "special_tokens_map.json");

        var vocab = TokenizerFiles.ReadVocab(vocabPath);
        var bpe = new BpeMerger(TokenizerFiles.ReadMerges(Path.Combine(dir, "merges.txt")));
        using var config = TokenizerFiles.ReadOptionalConfig(configPath);
        using var map = TokenizerFiles.ReadOptionalConfig(mapPath);

        var added = TokenizerFiles.AddedTokens(config, configPath).ToList();
        (string, int) Resolve(string key, string fallback)
        {
            var (content, source) = TokenizerFiles.TokenContent(map, key, mapPath) is { } fromMap ? (fromMap, mapPath)
                : TokenizerFiles.TokenContent(config, key, configPath) is { } fromConfig ? (fromConfig, configPath)
                : (fallback, "CLIP's default");
            if (vocab.TryGetValue(content, out int id)) return (content, id);
            foreach (var (c, i, _) in added) if (c == content) return (content, i);
            throw new InvalidFileException(vocabPath, $"{key} {System.Text.Json.JsonSerializer.Serialize(content)} (from {source}) is not in the vocabulary");
        }

        var special = new SpecialTokens(
            Resolve("bos_token", "<|startoftext|>"),
            Resolve("eos_token", "<|endoftext|>"),
            Resolve("pad_token", "<|endoftext|>"),
            Resolve("unk_token", "<|endoftext|>"),
            added.Where(a => a.Special).Select(a => (a.Content, a.Id)).ToArray());

        int maxLength = options.MaxLength ?? ConfiguredMaxLength(config, configPath);
        if (maxLength < 2 || maxLength > MaxSupportedLength)
            throw new CudaDreamException($"tokenizer max length {maxLength} is outside 2..{MaxSupportedLength}");
        bool cleanUp = TokenizerFiles.Boolean(config, "clean_up_tokenization_spaces") ?? true;
        return new ClipTokenizer(dir, vocab, bpe, special, maxLength, cleanUp, options.Cleaning);
    }

    private static int ConfiguredMaxLength(System.Text.Json.JsonDocument? config, string configPath)
    {
        var value = TokenizerFiles.Number(config, "model_max_length", configPath);
        if (value == null || value > MaxSupportedLength) return DefaultMaxLength;
        if (value < 2 || value != Math.Floor(value.Value))
            throw new InvalidFileException(configPath, $"model_max_length {value} is not an integer ≥ 2");
        return (int)value.Value;
    }

    private static string ResolveFolder(string directory)
    {
        if (!System.IO.Directory.Exists(directory))
            throw new CudaDreamException($"{directory}: folder not found");
        foreach (var candidate in new[] { directory, Path.Combine(directory, "tokenizer") })
        {
            bool hasVocab = File.Exists(Path.Combine(candidate, "vocab.json"));
            bool hasMerges = File.Exists(Path.Combine(candidate, "merges.txt"));
            if (hasVocab && hasMerges) return candidate;
            if (hasVocab || hasMerges)
                throw new CudaDreamException($"{Path.Combine(candidate, hasVocab ? "merges.txt" : "vocab.json")}: file not found (a CLIP tokenizer needs vocab.json and merges.txt)");
        }
        throw new CudaDreamException($"{directory}: no CLIP tokenizer (looked for vocab.json and merges.txt in it and in its tokenizer/ folder)");
    }

    /// <summary>Tokenizes a prompt: unpadded ids with bos/eos, and the padded, truncated text-encoder input.</summary>
    public TokenizedPrompt Encode(string text)
    {
        var (ids, tokens) = TokenizeWithTokens(text);
        int keep = Math.Min(ids.Count, MaxLength - 2);
        var inputIds = new int[MaxLength];
        inputIds[0] = BosId;
        for (int i = 0; i < keep; i++) inputIds[1 + i] = ids[i];
        inputIds[1 + keep] = EosId;
        for (int i = 2 + keep; i < MaxLength; i++) inputIds[i] = PadId;

        bool truncated = ids.Count > keep;
        string? cut = truncated ? Decode(ids.Skip(keep)) : null;
        string? warning = truncated
            ? $"The following part of your input was truncated because CLIP can only handle sequences up to {MaxLength} tokens: {cut}"
            : null;
        return new TokenizedPrompt(
            [BosId, .. ids, EosId],
            [BosToken, .. tokens, EosToken],
            inputIds, truncated, cut, warning);
    }

    /// <summary>Text-encoder input for a batch of prompts: I32 [prompts, MaxLength].</summary>
    public Tensor EncodeBatch(IReadOnlyList<string> texts)
    {
        var data = new int[checked(texts.Count * MaxLength)];
        for (int i = 0; i < texts.Count; i++) Encode(texts[i]).InputIds.CopyTo(data, i * MaxLength);
        return Tensor.FromArray(data, texts.Count, MaxLength);
    }

    /// <summary>The prompt's token ids without bos/eos, untruncated.</summary>
    public int[] Tokenize(string text) => TokenizeWithTokens(text).Ids.ToArray();

    /// <summary>
    /// The pieces BPE splits a text into, as readable text without the end-of-word marker:
    /// "sks_pixarstyle" → [sks, _, pix, ar, style] with SD 1.5's vocabulary. A piece that holds only part of a
    /// multi-byte character shows U+FFFD.
    /// </summary>
    public IReadOnlyList<string> Pieces(string text) =>
        TokenizeWithTokens(text).Tokens.Select(t => Utf8Text(t).Replace(BpeMerger.EndOfWord, "")).ToArray();

    /// <summary>A vocabulary string as text: its bytes read as UTF-8 (U+FFFD for a partial character), "&lt;/w&gt;" kept.</summary>
    public static string ReadableToken(string token) => Utf8Text(token);

    /// <summary>The vocabulary string of an id, or null when the id is unknown.</summary>
    public string? TokenOf(int id) => _tokens.GetValueOrDefault(id);

    /// <summary>The id of a vocabulary string (byte-level, e.g. "dog&lt;/w&gt;"), or null.</summary>
    public int? IdOf(string token) => _vocab.TryGetValue(token, out int id) ? id : null;

    /// <summary>
    /// Ids back to text as transformers decodes them: byte-level text to UTF-8 (invalid bytes → U+FFFD),
    /// "&lt;/w&gt;" → space, ends trimmed, and clean_up_tokenization_spaces (" ," → "," …) when the config asks.
    /// </summary>
    public string Decode(IEnumerable<int> ids, bool skipSpecialTokens = false)
    {
        var sb = new StringBuilder();
        foreach (var id in ids)
        {
            if (skipSpecialTokens && _specialTokens.Any(s => s.Id == id)) continue;
            sb.Append(_tokens.GetValueOrDefault(id, UnkToken));
        }
        var text = Utf8Text(sb.ToString()).Replace(BpeMerger.EndOfWord, " ").Trim();
        return _cleanUpTokenizationSpaces ? CleanUpTokenizationSpaces(text) : text;
    }

    private static string Utf8Text(string byteLevel) => Encoding.UTF8.GetString(ByteLevelAlphabet.Decode(byteLevel));

    private static string CleanUpTokenizationSpaces(string text) => text
        .Replace(" .", ".").Replace(" ?", "?").Replace(" !", "!").Replace(" ,", ",").Replace(" ' ", "'")
        .Replace(" n't", "n't").Replace(" 'm", "'m").Replace(" 's", "'s").Replace(" 've", "'ve").Replace(" 're", "'re");

    private (List<int> Ids, List<string> Tokens) TokenizeWithTokens(string text)
    {
        var ids = new List<int>();
        var tokens = new List<string>();
        foreach (var (chunk, specialId) in SplitOnSpecialTokens(text))
        {
            if (specialId is int sid) { ids.Add(sid); tokens.Add(chunk); continue; }
            foreach (var word in ClipPreTokenizer.Split(TextCleaners.Clean(chunk, Cleaning)))
            {
                // CLIP's bpe() returns its two markers unchanged (they are seeded into its cache).
                if (word is "<|startoftext|>" or "<|endoftext|>")
                {
                    ids.Add(_vocab.GetValueOrDefault(word, UnkId));
                    tokens.Add(word);
                    continue;
                }
                foreach (var symbol in _bpe.Encode(ByteLevelAlphabet.Encode(word)))
                {
                    ids.Add(_vocab.GetValueOrDefault(symbol, UnkId));
                    tokens.Add(symbol);
                }
            }
        }
        return (ids, tokens);
    }

    /// <summary>transformers splits special tokens out of the raw text (its added-tokens trie: earliest match,
    /// longest at that position) before cleaning, so "!&lt;|endoftext|&gt;" is two pieces, not one punctuation run.</summary>
    private IEnumerable<(string Text, int? SpecialId)> SplitOnSpecialTokens(string text)
    {
        int start = 0;
        for (int i = 0; i < text.Length; i++)
        {
            foreach (var (content, id) in _specialTokens)
            {
                if (string.CompareOrdinal(text, i, content, 0, content.Length) != 0) continue;
                if (i > start) yield return (text[start..i], null);
                yield return (content, id);
                i += content.Length - 1;
                start = i + 1;
                break;
            }
        }
        if (start < text.Length) yield return (text[start..], null);
    }
}
