using CudaDream.Engine.Formats;
using CudaDream.Engine.Tensors;

namespace CudaDream.Engine.Training.Lora;

/// <summary>
/// Reads LoRA .safetensors files in the formats in use for SD 1.x and resolves them against a model's modules:
/// <list type="bullet">
/// <item>kohya / AUTOMATIC1111: <c>lora_unet_&lt;path with '.'→'_'&gt;.lora_down.weight</c>, <c>.lora_up.weight</c>,
/// <c>.alpha</c>; <c>lora_te_&lt;text_model path&gt;…</c>. Underscores are resolved by building the '_' form
/// of every known module path, so no guessing at where dots were.</item>
/// <item>diffusers / PEFT: <c>unet.&lt;path&gt;.lora.down.weight</c> / <c>lora.up.weight</c>,
/// <c>&lt;path&gt;.lora_A.weight</c> / <c>lora_B.weight</c>, with <c>unet.</c>, <c>text_encoder.</c> or
/// <c>base_model.model.</c> prefixes.</item>
/// <item>CudaDream's own: <c>&lt;module path&gt;.lora_down.weight</c>, <c>.lora_up.weight</c>, optional <c>&lt;module path&gt;.alpha</c>.</item>
/// </list>
/// Alpha defaults to the rank (scale 1) where the file has none.
/// </summary>
public static class LoraFile
{
    public const string KohyaUNetPrefix = "lora_unet_";
    public const string KohyaTextPrefix = "lora_te_";

    /// <summary>The kohya module name of a module path ("lora_unet_down_blocks_0_…").</summary>
    public static string KohyaName(string component, string modulePath) =>
        (component == LoraComponents.UNet ? KohyaUNetPrefix : KohyaTextPrefix) + modulePath.Replace('.', '_');

    private static readonly (string Suffix, bool IsUp)[] HalfSuffixes =
    [
        (".lora_down.weight", false), (".lora_up.weight", true),
        (".lora.down.weight", false), (".lora.up.weight", true),
        (".lora_A.weight", false), (".lora_B.weight", true),
    ];

    private static readonly string[] AlphaSuffixes = [".alpha"];

    public static LoraLoadResult Load(string path, IReadOnlyList<LoraTarget> targets)
    {
        using var file = SafetensorsFile.Open(path);
        return Resolve(path, file.Names.ToDictionary(n => n, file.Load), targets, file.Metadata);
    }

    /// <summary>Resolves already-loaded tensors (e.g. from a training checkpoint); <paramref name="source"/> names them in errors.</summary>
    public static LoraLoadResult Resolve(string source, IReadOnlyDictionary<string, Tensor> tensors, IReadOnlyList<LoraTarget> targets,
        IReadOnlyDictionary<string, string>? metadata = null)
    {
        var byName = BuildNameIndex(targets);
        var halves = new Dictionary<LoraTarget, (string? DownKey, Tensor? Down, string? UpKey, Tensor? Up, string? AlphaKey, Tensor? Alpha)>();
        var unmatched = new List<string>();

        foreach (var (key, tensor) in tensors.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            var (module, kind) = Split(key);
            if (module == null || !byName.TryGetValue(module, out var target)) { unmatched.Add(key); continue; }
            halves.TryGetValue(target, out var h);
            switch (kind)
            {
                case "down": if (h.Down != null) throw Duplicate(source, key, h.DownKey!); h.DownKey = key; h.Down = tensor; break;
                case "up": if (h.Up != null) throw Duplicate(source, key, h.UpKey!); h.UpKey = key; h.Up = tensor; break;
                default: h.AlphaKey = key; h.Alpha = tensor; break;
            }
            halves[target] = h;
        }

        var adapters = new List<LoraAdapter>();
        foreach (var (target, h) in halves.OrderBy(kv => kv.Key.Component, StringComparer.Ordinal).ThenBy(kv => kv.Key.ModulePath, StringComparer.Ordinal))
        {
            if (h.Down == null || h.Up == null)
            {
                string have = h.DownKey ?? h.UpKey ?? h.AlphaKey!;
                throw new CudaDreamException($"{source}: '{have}' has no matching {(h.Down == null ? "down" : "up")} half for module {target.ModulePath}");
            }
            adapters.Add(MakeAdapter(source, target, h.DownKey!, h.Down, h.UpKey!, h.Up, h.AlphaKey, h.Alpha));
        }
        return new LoraLoadResult(adapters, unmatched, metadata ?? new Dictionary<string, string>());
    }

    private static CudaDreamException Duplicate(string source, string key, string other) =>
        new($"{source}: '{key}' and '{other}' adapt the same module");

    /// <summary>Every name a module may be called by in a LoRA file, without the half suffix.</summary>
    private static Dictionary<string, LoraTarget> BuildNameIndex(IReadOnlyList<LoraTarget> targets)
    {
        var index = new Dictionary<string, LoraTarget>(StringComparer.Ordinal);
        void Add(string name, LoraTarget t)
        {
            if (index.TryGetValue(name, out var other) && other != t)
                throw new ArgumentException($"LoRA name '{name}' is ambiguous between {other.Component}:{other.ModulePath} and {t.Component}:{t.ModulePath}");
            index[name] = t;
        }
        foreach (var t in targets)
        {
            Add(KohyaName(t.Component, t.ModulePath), t);
            Add(t.ModulePath, t);
            Add(t.Component + "." + t.ModulePath, t);
            Add("base_model.model." + t.ModulePath, t);
            Add("base_model.model." + t.Component + "." + t.ModulePath, t);
        }
        return index;
    }

    /// <summary>"name.lora_down.weight" → ("name", "down"); "name.alpha" → ("name", "alpha"); anything else → (null, "").</summary>
    private static (string? Module, string Kind) Split(string key)
    {
        foreach (var (suffix, isUp) in HalfSuffixes)
            if (key.EndsWith(suffix, StringComparison.Ordinal)) return (key[..^suffix.Length], isUp ? "up" : "down");
        foreach (var suffix in AlphaSuffixes)
            if (key.EndsWith(suffix, StringComparison.Ordinal)) return (key[..^suffix.Length], "alpha");
        return (null, "");
    }

    private static LoraAdapter MakeAdapter(string source, LoraTarget target, string downKey, Tensor down, string upKey, Tensor up, string? alphaKey, Tensor? alpha)
    {
        var w = target.WeightShape;
        if (!down.DType.IsFloat()) throw new CudaDreamException($"{source}: '{downKey}' is {down.DType}, not a float tensor");
        if (!up.DType.IsFloat()) throw new CudaDreamException($"{source}: '{upKey}' is {up.DType}, not a float tensor");
        if (down.Rank < 2) throw Misshaped(source, downKey, down, target);
        int rank = down.Shape[0];
        if (rank < 1) throw Misshaped(source, downKey, down, target);

        int[] downShape, upShape;
        if (w.Length == 2) { downShape = [rank, w[1]]; upShape = [w[0], rank]; }
        else if (w.Length == 4) { downShape = [rank, w[1], w[2], w[3]]; upShape = [w[0], rank, 1, 1]; }
        else throw new CudaDreamException($"{source}: module {target.ModulePath} has a rank-{w.Length} weight; LoRA adapts linears and convs");

        down = FitShape(source, downKey, down, downShape, target);
        up = FitShape(source, upKey, up, upShape, target);

        float a = rank;
        if (alpha != null)
        {
            if (alpha.Numel != 1 || !alpha.DType.IsFloat() && alpha.DType is not (DType.I32 or DType.I64))
                throw new CudaDreamException($"{source}: '{alphaKey}' should be one number, got {alpha}");
            a = alpha.ToFloat32Array()[0];
            if (!float.IsFinite(a)) throw new CudaDreamException($"{source}: '{alphaKey}' is {a}");
        }
        return new LoraAdapter(target.ModulePath, target.Component, down, up, a, rank);
    }

    /// <summary>Accepts the expected shape, or the same numbers written as a 1×1 conv / a linear (trainers differ on 1×1 convs).</summary>
    private static Tensor FitShape(string source, string key, Tensor t, int[] expected, LoraTarget target)
    {
        if (Shapes.Equal(t.Shape, expected)) return t;
        bool sameUpToUnitDims = t.Shape.Take(2).SequenceEqual(expected.Take(2))
            && t.Shape.Skip(2).All(d => d == 1) && expected.Skip(2).All(d => d == 1);
        if (sameUpToUnitDims) return t.Reshape(expected);
        throw Misshaped(source, key, t, target, expected);
    }

    private static CudaDreamException Misshaped(string source, string key, Tensor t, LoraTarget target, int[]? expected = null) =>
        new($"{source}: '{key}' is {Shapes.Format(t.Shape)}{(expected != null ? $", expected {Shapes.Format(expected)}" : "")} for module {target.ModulePath} with weight {Shapes.Format(target.WeightShape)}");
}
