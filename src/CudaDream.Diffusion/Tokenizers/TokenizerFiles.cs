using System.Text;
using System.Text.Json;
using CudaDream.Engine;

namespace CudaDream.Diffusion.Tokenizers;

/// <summary>
/// Reads a Hugging Face CLIP tokenizer folder (vocab.json, merges.txt, and the optional
/// tokenizer_config.json / special_tokens_map.json) with every size bounded: these files come from
/// downloaded model folders and are not trusted.
/// </summary>
internal static class TokenizerFiles
{
    public const long MaxVocabBytes = 64L << 20;
    public const long MaxMergesBytes = 64L << 20;
    public const long MaxConfigBytes = 1L << 20;
    public const int MaxTokenId = (1 << 24) - 1;
    public const int MaxTokenChars = 1024;

    public static byte[] ReadBounded(string path, long maxBytes)
    {
        try
        {
            using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
            if (fs.Length > maxBytes)
                throw new InvalidFileException(path, $"{fs.Length} bytes, more than the {maxBytes >> 20} MiB a tokenizer file may have");
            var bytes = new byte[fs.Length];
            fs.ReadExactly(bytes);
            return bytes;
        }
        catch (IOException e) when (e is not EndOfStreamException)
        {
            throw new InvalidFileException(path, $"cannot be read ({e.Message})");
        }
        catch (UnauthorizedAccessException e)
        {
            throw new InvalidFileException(path, $"cannot be read ({e.Message})");
        }
    }

    /// <summary>vocab.json: one JSON object mapping each token to its id.</summary>
    public static Dictionary<string, int> ReadVocab(string path)
    {
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        using var doc = ParseJson(path, MaxVocabBytes);
        if (doc.RootElement.ValueKind != JsonValueKind.Object)
            throw new InvalidFileException(path, "expected a JSON object of token → id");
        foreach (var entry in doc.RootElement.EnumerateObject())
        {
            if (entry.Value.ValueKind != JsonValueKind.Number || !entry.Value.TryGetInt32(out int id) || id < 0 || id > MaxTokenId)
                throw new InvalidFileException(path, $"token {Quote(entry.Name)} has id {Truncate(entry.Value.GetRawText())}, expected an integer in [0, {MaxTokenId}]");
            if (entry.Name.Length == 0 || entry.Name.Length > MaxTokenChars)
                throw new InvalidFileException(path, $"token of {entry.Name.Length} characters (id {id}), expected 1..{MaxTokenChars}");
            if (!vocab.TryAdd(entry.Name, id))
                throw new InvalidFileException(path, $"token {Quote(entry.Name)} appears twice");
        }
        if (vocab.Count == 0) throw new InvalidFileException(path, "empty vocabulary");
        return vocab;
    }

    /// <summary>merges.txt: an optional "#version" first line, then one "left right" pair per line, best first.</summary>
    public static List<(string Left, string Right)> ReadMerges(string path)
    {
        var text = DecodeUtf8(path, ReadBounded(path, MaxMergesBytes)).TrimStart('\uFEFF');
        var merges = new List<(string, string)>();
        int lineNumber = 0;
        foreach (var rawLine in text.Split('\n'))
        {
            lineNumber++;
            var line = rawLine.TrimEnd('\r');
            if (lineNumber == 1 && line.StartsWith("#version", StringComparison.Ordinal)) continue;
            if (line.Length == 0) continue;
            int space = line.IndexOf(' ');
            if (space <= 0 || space == line.Length - 1 || line.IndexOf(' ', space + 1) >= 0 || line.Length > 2 * MaxTokenChars)
                throw new InvalidFileException(path, $"line {lineNumber}: expected two symbols separated by one space, got {Quote(Truncate(line))}");
            merges.Add((line[..space], line[(space + 1)..]));
        }
        return merges;
    }

    /// <summary>A tokenizer_config.json or special_tokens_map.json, or null when absent.</summary>
    public static JsonDocument? ReadOptionalConfig(string path) => File.Exists(path) ? ParseJson(path, MaxConfigBytes) : null;

    /// <summary>A special-token entry: a plain string or an AddedToken object with "content".</summary>
    public static string? TokenContent(JsonDocument? config, string key, string path)
    {
        if (config == null || config.RootElement.ValueKind != JsonValueKind.Object
            || !config.RootElement.TryGetProperty(key, out var value)) return null;
        var content = value.ValueKind switch
        {
            JsonValueKind.String => value.GetString(),
            JsonValueKind.Object when value.TryGetProperty("content", out var c) && c.ValueKind == JsonValueKind.String => c.GetString(),
            JsonValueKind.Null => null,
            _ => throw new InvalidFileException(path, $"\"{key}\" must be a string or an object with \"content\""),
        };
        if (content != null && (content.Length == 0 || content.Length > MaxTokenChars))
            throw new InvalidFileException(path, $"\"{key}\" has {content.Length} characters, expected 1..{MaxTokenChars}");
        return content;
    }

    /// <summary>tokenizer_config.json's added_tokens_decoder ({"id": {"content": ...}}), written by newer transformers.</summary>
    public static IEnumerable<(string Content, int Id, bool Special)> AddedTokens(JsonDocument? config, string path)
    {
        if (config == null || config.RootElement.ValueKind != JsonValueKind.Object
            || !config.RootElement.TryGetProperty("added_tokens_decoder", out var added) || added.ValueKind != JsonValueKind.Object)
            yield break;
        foreach (var entry in added.EnumerateObject())
        {
            if (!int.TryParse(entry.Name, out int id) || id < 0 || id > MaxTokenId
                || entry.Value.ValueKind != JsonValueKind.Object
                || !entry.Value.TryGetProperty("content", out var c) || c.ValueKind != JsonValueKind.String
                || c.GetString() is not { Length: > 0 and <= MaxTokenChars } content)
                throw new InvalidFileException(path, $"added_tokens_decoder entry {Quote(Truncate(entry.Name))} is not {{\"<id>\": {{\"content\": \"<token>\"}}}}");
            bool special = entry.Value.TryGetProperty("special", out var sp) && sp.ValueKind == JsonValueKind.True;
            yield return (content, id, special);
        }
    }

    public static double? Number(JsonDocument? config, string key, string path)
    {
        if (config == null || config.RootElement.ValueKind != JsonValueKind.Object
            || !config.RootElement.TryGetProperty(key, out var value) || value.ValueKind == JsonValueKind.Null) return null;
        if (value.ValueKind != JsonValueKind.Number) throw new InvalidFileException(path, $"\"{key}\" must be a number");
        return value.GetDouble();
    }

    public static bool? Boolean(JsonDocument? config, string key)
    {
        if (config == null || config.RootElement.ValueKind != JsonValueKind.Object
            || !config.RootElement.TryGetProperty(key, out var value)) return null;
        return value.ValueKind switch { JsonValueKind.True => true, JsonValueKind.False => false, _ => null };
    }

    private static JsonDocument ParseJson(string path, long maxBytes)
    {
        var bytes = Engine.Formats.Utf8Text.Require(path, ReadBounded(path, maxBytes));
        try
        {
            return JsonDocument.Parse(bytes, new JsonDocumentOptions { MaxDepth = 16 });
        }
        catch (JsonException e)
        {
            throw new InvalidFileException(path, $"invalid JSON at line {(e.LineNumber ?? 0) + 1}: {e.Message.Split('.')[0]}");
        }
    }

    private static string DecodeUtf8(string path, byte[] bytes)
    {
        try
        {
            return new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(bytes);
        }
        catch (DecoderFallbackException)
        {
            throw new InvalidFileException(path, "not valid UTF-8");
        }
    }

    private static string Quote(string s) => JsonSerializer.Serialize(s);
    private static string Truncate(string s) => s.Length <= 60 ? s : s[..60] + "…";
}
