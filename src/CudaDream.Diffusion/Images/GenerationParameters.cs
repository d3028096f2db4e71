using System.Globalization;
using System.Text.Json;
using System.Text.Encodings.Web;

namespace CudaDream.Diffusion.Images;

/// <summary>
/// How an image was generated, in AUTOMATIC1111's infotext form (the "parameters" PNG text):
/// <code>
/// &lt;prompt&gt;
/// Negative prompt: &lt;negative prompt&gt;
/// Steps: 25, Sampler: DDIM, CFG scale: 7.5, Seed: 1, Size: 512x512, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly
/// </code>
/// The negative-prompt line is left out when there is none; a value holding ',', ':' or a newline is written
/// as a JSON string, as A1111 quotes it; <see cref="Extra"/> fields (e.g. "Lora hashes", "Version") follow in order.
/// </summary>
public sealed record GenerationParameters
{
    public required string Prompt { get; init; }
    public string? NegativePrompt { get; init; }
    public required int Steps { get; init; }
    /// <summary>A1111's sampler name: "DDIM", "Euler", "Euler a", "DPM++ 2M Karras", "PLMS", "LMS", …</summary>
    public required string Sampler { get; init; }
    public required double CfgScale { get; init; }
    public required long Seed { get; init; }
    public required int Width { get; init; }
    public required int Height { get; init; }
    /// <summary>A1111's short hash: the first 10 hex digits of the checkpoint file's SHA-256.</summary>
    public string? ModelHash { get; init; }
    public string? Model { get; init; }
    public IReadOnlyList<KeyValuePair<string, string>> Extra { get; init; } = [];

    public string ToInfotext()
    {
        var fields = new List<KeyValuePair<string, string?>>
        {
            new("Steps", Steps.ToString(CultureInfo.InvariantCulture)),
            new("Sampler", Sampler),
            new("CFG scale", CfgScale.ToString("R", CultureInfo.InvariantCulture)),
            new("Seed", Seed.ToString(CultureInfo.InvariantCulture)),
            new("Size", $"{Width}x{Height}"),
            new("Model hash", ModelHash),
            new("Model", Model),
        };
        fields.AddRange(Extra.Select(e => new KeyValuePair<string, string?>(e.Key, e.Value)));
        var parameters = string.Join(", ", fields.Where(f => f.Value != null).Select(f => $"{f.Key}: {Quote(f.Value!)}"));
        var negative = string.IsNullOrEmpty(NegativePrompt) ? "" : $"\nNegative prompt: {NegativePrompt}";
        return $"{Prompt}{negative}\n{parameters}".Trim();
    }

    private static readonly JsonSerializerOptions Unescaped = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>A1111's infotext_utils.quote: JSON-quote only what would break the "key: value, …" list.</summary>
    private static string Quote(string value) =>
        value.Contains(',') || value.Contains('\n') || value.Contains(':') ? JsonSerializer.Serialize(value, Unescaped) : value;
}
