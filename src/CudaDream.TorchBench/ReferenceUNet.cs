using CudaDream.Diffusion.Models.Builder;
using CudaDream.Engine;
using CudaDream.Engine.Training.Lora;
using CudaDream.TorchBench.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace CudaDream.TorchBench;

/// <summary>A model folder's UNet as a TorchSharp module with the folder's weights, and where its config came from.</summary>
public sealed class ReferenceUNet : IDisposable
{
    private ReferenceUNet(UNet2DConditionModel model, string configSource)
    {
        Model = model;
        ConfigSource = configSource;
    }

    public UNet2DConditionModel Model { get; }
    public UNetConfig Config => Model.Config;
    /// <summary>The config file read, or a sentence saying the published SD 1.5 config was assumed.</summary>
    public string ConfigSource { get; }

    /// <summary>
    /// The folder's diffusers UNet config: <c>unet/config.json</c>, else <c>configs/unet/config.json</c> (the layout of
    /// the sd-tiny fixture), else SD 1.5's published config (the weights' shapes are checked against it on loading).
    /// </summary>
    public static (UNetConfig Config, string Source) FindConfig(string modelDir)
    {
        foreach (var candidate in new[] { Path.Combine(modelDir, "unet", "config.json"), Path.Combine(modelDir, "configs", "unet", "config.json") })
            if (File.Exists(candidate)) return (UNetConfig.FromJson(File.ReadAllText(candidate), candidate), candidate);
        return (UNetConfig.Sd15, "no unet/config.json: SD 1.5's published UNet config assumed");
    }

    /// <summary>Builds the module from the folder's config and loads every parameter from its ONNX graph (float32, CPU).</summary>
    public static ReferenceUNet Load(string modelDir)
    {
        if (!Directory.Exists(modelDir)) throw new CudaDreamException($"{modelDir}: model folder not found");
        var (config, source) = FindConfig(modelDir);
        var weights = OnnxUNetWeights.Read(modelDir, config);
        var model = new UNet2DConditionModel(config);
        var parameters = model.named_parameters().ToDictionary(p => p.name, p => p.parameter, StringComparer.Ordinal);
        // The module tree and CudaDream's parameter table must name the same parameters: a difference is a bug here.
        var differences = DifferencesFromTable(model, weights.Select(w => (w.Key, w.Value.Shape)));
        if (differences.Count > 0)
            throw new InvalidOperationException($"the TorchSharp UNet's parameters differ from the diffusers table: {string.Join("; ", differences.Take(5))}");
        using (no_grad())
        {
            foreach (var (name, p) in parameters)
            {
                using var t = tensor(weights[name].Data, p.shape);
                p.copy_(t);
                p.requires_grad = false;
            }
        }
        model.eval();
        return new ReferenceUNet(model, source);
    }

    /// <summary>
    /// How the module's parameters differ from a table of (diffusers key, shape): keys missing on either side and
    /// shapes that disagree; empty when they name the same parameters with the same shapes.
    /// </summary>
    public static List<string> DifferencesFromTable(UNet2DConditionModel model, IEnumerable<(string Name, int[] Shape)> table)
    {
        var mine = model.named_parameters().ToDictionary(p => p.name, p => p.parameter.shape, StringComparer.Ordinal);
        var theirs = table.ToDictionary(t => t.Name, t => t.Shape.Select(d => (long)d).ToArray(), StringComparer.Ordinal);
        var differences = new List<string>();
        differences.AddRange(theirs.Keys.Except(mine.Keys).Select(k => $"{k}: not in the module"));
        differences.AddRange(mine.Keys.Except(theirs.Keys).Select(k => $"{k}: not in the table"));
        foreach (var (name, shape) in theirs)
            if (mine.TryGetValue(name, out var moduleShape) && !moduleShape.SequenceEqual(shape))
                differences.Add($"{name}: module [{string.Join(",", moduleShape)}], table [{string.Join(",", shape)}]");
        return differences;
    }

    /// <summary>Every linear layer of the tree as a LoRA target (module path, [out, in]).</summary>
    public IReadOnlyList<LoraTarget> LinearTargets() =>
        Model.named_modules().Where(m => m.module is AdaptableLinear)
            .Select(m => { var l = (AdaptableLinear)m.module; return new LoraTarget(LoraComponents.UNet, m.name, [(int)l.OutFeatures, (int)l.InFeatures]); })
            .ToList();

    /// <summary>
    /// Attaches the adapters (down [r, in], up [out, r], scale alpha/r) to their linears; only the adapters' parameters
    /// require gradients. Returns the adapters' modules by path.
    /// </summary>
    public IReadOnlyDictionary<string, AdaptableLinear> AttachLora(IReadOnlyList<LoraAdapter> adapters)
    {
        var linears = Model.named_modules().Where(m => m.module is AdaptableLinear)
            .ToDictionary(m => m.name, m => (AdaptableLinear)m.module, StringComparer.Ordinal);
        var attached = new Dictionary<string, AdaptableLinear>(StringComparer.Ordinal);
        foreach (var a in adapters)
        {
            if (!linears.TryGetValue(a.ModulePath, out var layer)) throw new CudaDreamException($"LoRA module '{a.ModulePath}' is no linear layer of this UNet");
            using var down = tensor(a.Down.ToFloat32Array(), a.Down.Shape.Select(d => (long)d).ToArray());
            using var up = tensor(a.Up.ToFloat32Array(), a.Up.Shape.Select(d => (long)d).ToArray());
            layer.AttachLora(a.Rank, a.Alpha, down, up);
            attached[a.ModulePath] = layer;
        }
        return attached;
    }

    public void Dispose() => Model.Dispose();
}
