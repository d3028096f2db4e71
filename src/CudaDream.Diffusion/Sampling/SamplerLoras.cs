using System.Globalization;
using System.Security.Cryptography;
using CudaDream.Diffusion.Models;
using CudaDream.Diffusion.Models.Export;
using CudaDream.Engine;
using CudaDream.Engine.Tensors;
using CudaDream.Engine.Training.Lora;

namespace CudaDream.Diffusion.Sampling;

/// <summary>A LoRA to apply while sampling: a file (kohya/A1111, diffusers/PEFT or CudaDream keys) or adapters already
/// in memory (the trainer's LoRA being trained), each with its multiplier.</summary>
public abstract record LoraSource(string Name, float Multiplier)
{
    public sealed record File(string Path, float Multiplier = 1f) : LoraSource(System.IO.Path.GetFileNameWithoutExtension(Path), Multiplier);

    /// <summary>Resolved adapters (module paths of the model, <see cref="LoraAdapter"/>), e.g. from a training run.</summary>
    public sealed record Adapters(string Label, IReadOnlyList<LoraAdapter> Items, float Multiplier = 1f) : LoraSource(Label, Multiplier);

    /// <summary>The command-line form "FILE" or "FILE:multiplier".</summary>
    public static LoraSource Parse(string text)
    {
        var spec = LoraSpec.Parse(text);
        return new File(spec.Path, spec.Multiplier);
    }
}

/// <summary>
/// LoRAs resolved against a model folder's weights: which initializer gets which adapters, ready to be merged into
/// copies of the base weights (W' = W + Σ m·(α/r)·Up@Down, <see cref="LoraMerge"/>) by whichever engine loads the
/// network. Keys that match no module are kept as warnings; a file whose keys match nothing, or whose shapes do
/// not fit the model, is an error.
/// </summary>
public sealed class SamplerLoras
{
    private readonly Dictionary<string, Dictionary<string, (LoraWeightSlot Slot, List<(LoraAdapter, float)> Adapters)>> _byComponent = new(StringComparer.Ordinal);

    public IReadOnlyList<string> Warnings { get; }
    /// <summary>Modules that receive at least one adapter.</summary>
    public int ModuleCount => _byComponent.Values.Sum(d => d.Count);
    /// <summary>A1111's "Lora hashes" value: "name: first 12 hex digits of the file's SHA-256", one per file.</summary>
    public string? Hashes => _hashes.Count > 0 ? string.Join(", ", _hashes) : null;
    public static SamplerLoras None { get; } = new([], []);

    private readonly List<string> _hashes;

    private SamplerLoras(List<string> warnings, List<string> hashes)
    {
        Warnings = warnings;
        _hashes = hashes;
    }

    public static SamplerLoras Resolve(ModelFolder folder, IReadOnlyList<LoraSource> sources)
    {
        if (sources.Count == 0) return None;
        var slots = folder.LoraSlots().GroupBy(s => (s.Component, s.ModulePath)).ToDictionary(g => g.Key, g => g.First());
        var targets = slots.Values.Select(s => new LoraTarget(s.Component, s.ModulePath, s.WeightShape)).ToList();
        var warnings = new List<string>();
        var hashes = new List<string>();
        var result = new SamplerLoras(warnings, hashes);
        foreach (var source in sources)
        {
            if (!float.IsFinite(source.Multiplier)) throw new CudaDreamException($"LoRA {source.Name}: multiplier {source.Multiplier} is not a finite number");
            IReadOnlyList<LoraAdapter> adapters;
            switch (source)
            {
                case LoraSource.File f:
                    if (!System.IO.File.Exists(f.Path)) throw new CudaDreamException($"{f.Path}: LoRA file not found");
                    var loaded = LoraFile.Load(f.Path, targets);
                    if (loaded.Adapters.Count == 0)
                        throw new CudaDreamException($"{f.Path}: no key matches a module of this model ({loaded.UnmatchedKeys.Count} keys, e.g. {string.Join(", ", loaded.UnmatchedKeys.Take(3))}): a LoRA for another architecture?");
                    if (loaded.UnmatchedKeys.Count > 0) warnings.Add(Unmatched(f.Path, loaded.UnmatchedKeys));
                    if (Models.Export.LoraSpec.NonFiniteWarning(f.Path, loaded.Adapters) is { } nonFinite) warnings.Add(nonFinite);
                    adapters = loaded.Adapters;
                    hashes.Add($"{f.Name}: {ShortHash(f.Path)}");
                    break;
                case LoraSource.Adapters a:
                    var unknown = a.Items.Where(x => !slots.ContainsKey((x.Component, x.ModulePath))).Select(x => $"{x.Component}:{x.ModulePath}").ToList();
                    if (unknown.Count > 0) warnings.Add(Unmatched(a.Label, unknown));
                    adapters = a.Items.Where(x => slots.ContainsKey((x.Component, x.ModulePath))).ToList();
                    break;
                default: throw new ArgumentException($"unknown LoRA source {source.GetType().Name}");
            }
            foreach (var adapter in adapters)
            {
                var slot = slots[(adapter.Component, adapter.ModulePath)];
                CheckFits(source.Name, adapter, slot);
                if (!result._byComponent.TryGetValue(slot.Component, out var perSlot)) result._byComponent[slot.Component] = perSlot = new(StringComparer.Ordinal);
                if (!perSlot.TryGetValue(slot.Initializer, out var entry)) perSlot[slot.Initializer] = entry = (slot, new());
                entry.Adapters.Add((adapter, source.Multiplier));
            }
        }
        return result;
    }

    private static string Unmatched(string source, IReadOnlyList<string> keys) =>
        $"{source}: {keys.Count} key{(keys.Count == 1 ? "" : "s")} match no module of this model and {(keys.Count == 1 ? "was" : "were")} not applied: {string.Join(", ", keys.Take(10))}{(keys.Count > 10 ? ", …" : "")}";

    private static void CheckFits(string source, LoraAdapter a, LoraWeightSlot slot)
    {
        int outDim = slot.WeightShape[0];
        long inDim = Shapes.Numel(slot.WeightShape) / outDim;
        if (a.Rank < 1 || a.Up.Shape[0] != outDim || a.Up.Numel != (long)outDim * a.Rank || a.Down.Numel != inDim * a.Rank)
            throw new CudaDreamException($"LoRA {source}: module {a.ModulePath} has up {Shapes.Format(a.Up.Shape)} / down {Shapes.Format(a.Down.Shape)}, which do not fit its weight {Shapes.Format(slot.WeightShape)}: a LoRA for another architecture?");
    }

    /// <summary>The initializers of one network that receive adapters.</summary>
    public IReadOnlyCollection<LoraWeightSlot> SlotsOf(string component) =>
        _byComponent.TryGetValue(component, out var d) ? d.Values.Select(v => v.Slot).ToList() : [];

    /// <summary>
    /// The merged weights of one network, in the initializers' own layout and element type, computed from
    /// <paramref name="readStored"/> (the base weights by initializer name, never modified).
    /// </summary>
    public Dictionary<string, Tensor> MergedWeights(string component, Func<string, Tensor> readStored)
    {
        var merged = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        if (!_byComponent.TryGetValue(component, out var perSlot)) return merged;
        foreach (var (name, (slot, adapters)) in perSlot)
        {
            var stored = readStored(name);
            if (!stored.DType.IsFloat()) throw new CudaDreamException($"{component}: weight '{name}' of {slot.ModulePath} is {stored.DType}; LoRA merges into float weights");
            var weight = slot.StoredTransposed ? Transpose2D(stored) : stored;
            var result = LoraMerge.Apply(weight, adapters);
            merged[name] = slot.StoredTransposed ? Transpose2D(result) : result;
        }
        return merged;
    }

    /// <summary>[a, b] → [b, a], same element type.</summary>
    internal static Tensor Transpose2D(Tensor t)
    {
        if (t.Rank != 2) throw new ArgumentException($"transpose of a rank-{t.Rank} tensor");
        int rows = t.Shape[0], cols = t.Shape[1], size = t.DType.Size();
        var src = t.Data.Span;
        var dst = new byte[src.Length];
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++)
                src.Slice((r * cols + c) * size, size).CopyTo(dst.AsSpan((c * rows + r) * size, size));
        return new Tensor(t.DType, [cols, rows], dst);
    }

    private static string ShortHash(string path)
    {
        using var s = System.IO.File.OpenRead(path);
        return Convert.ToHexString(SHA256.HashData(s))[..12].ToLower(CultureInfo.InvariantCulture);
    }
}
