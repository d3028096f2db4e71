using System.Text.RegularExpressions;

namespace CudaDream.Engine.Training.Lora;

/// <summary>
/// Chooses which modules get adapters, by globs over module paths (<c>*</c> matches within and across
/// dots) or named presets:
/// <list type="bullet">
/// <item><c>attention</c> (default): <c>to_q, to_k, to_v, to_out.0</c> of every attention.</item>
/// <item><c>ff</c>: <c>ff.net.0.proj</c>, <c>ff.net.2</c>; <c>proj</c>: <c>proj_in</c>, <c>proj_out</c>.</item>
/// <item><c>locon</c>: the resnet convolutions (conv1, conv2, conv_shortcut).</item>
/// <item><c>text</c>: CLIP <c>q/k/v/out_proj</c> and <c>fc1/fc2</c>.</item>
/// <item><c>kohya</c>: attention + proj + ff of every transformer block and text (kohya's sd-scripts default network).</item>
/// </list>
/// </summary>
public static class LoraTargetSelector
{
    public static readonly IReadOnlyDictionary<string, string[]> Presets = new Dictionary<string, string[]>(StringComparer.OrdinalIgnoreCase)
    {
        ["attention"] = new[] { "*.to_q", "*.to_k", "*.to_v", "*.to_out.0" },
        ["ff"] = new[] { "*.ff.net.0.proj", "*.ff.net.2" },
        ["proj"] = new[] { "*.proj_in", "*.proj_out" },
        ["locon"] = new[] { "*resnets.*.conv1", "*resnets.*.conv2", "*resnets.*.conv_shortcut" },
        ["text"] = new[] { "*self_attn.q_proj", "*self_attn.k_proj", "*self_attn.v_proj", "*self_attn.out_proj", "*mlp.fc1", "*mlp.fc2" },
        ["kohya"] = new[] { "*.to_q", "*.to_k", "*.to_v", "*.to_out.0", "*.proj_in", "*.proj_out", "*.ff.net.0.proj", "*.ff.net.2",
            "*self_attn.q_proj", "*self_attn.k_proj", "*self_attn.v_proj", "*self_attn.out_proj", "*mlp.fc1", "*mlp.fc2" },
    };

    /// <summary>Expands presets and returns the glob list.</summary>
    public static IReadOnlyList<string> Expand(IEnumerable<string> specs) =>
        specs.SelectMany(s => Presets.TryGetValue(s, out var p) ? p : new[] { s }).Distinct().ToList();

    public static Regex Glob(string pattern) => new("^" + Regex.Escape(pattern).Replace(@"\*", ".*").Replace(@"\?", ".") + "$", RegexOptions.CultureInvariant);

    /// <summary>The targets whose module path matches any of the patterns (presets expanded).</summary>
    public static List<LoraTarget> Select(IEnumerable<LoraTarget> targets, IEnumerable<string> specs)
    {
        var globs = Expand(specs).Select(Glob).ToList();
        return targets.Where(t => globs.Any(g => g.IsMatch(t.ModulePath))).ToList();
    }
}
