using System.Globalization;
using CudaDream.Diffusion.Models.Builder;
using CudaDream.Diffusion.Models.Import;
using CudaDream.Engine;
using CudaDream.Engine.Formats;
using CudaDream.Engine.Tensors;
using CudaDream.Engine.Training.Lora;

namespace CudaDream.Diffusion.Models.Export;

public enum ExportFormat
{
    /// <summary>Original-SD single-file .safetensors with the keys AUTOMATIC1111 loads.</summary>
    Ldm,
    /// <summary>A new diffusers ONNX model folder.</summary>
    Onnx,
}

/// <summary>A LoRA file and its multiplier (<c>FILE[:w]</c> on the command line).</summary>
public sealed record LoraSpec(string Path, float Multiplier = 1f)
{
    /// <summary>"file.safetensors:0.8" → (file, 0.8); a suffix that is not a number stays part of the path (e.g. C:\…).</summary>
    /// <summary>
    /// FILE or FILE:multiplier. A name that exists as written is a file even with a colon in it; otherwise what follows
    /// the last colon is the multiplier and must be a finite number ("FILE:abc" is a bad multiplier, not a missing file).
    /// </summary>
    public static LoraSpec Parse(string s)
    {
        int colon = s.LastIndexOf(':');
        // "C:\x.safetensors": a drive letter's colon is part of the path.
        bool driveOnly = colon == 1 && s.Length > 2 && (s[2] == '\\' || s[2] == '/');
        if (colon <= 0 || driveOnly || System.IO.File.Exists(s)) return new LoraSpec(s);
        var text = s[(colon + 1)..];
        if (!float.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out float w) || !float.IsFinite(w))
            throw new CudaDreamException($"--lora {s}: multiplier '{text}' is not a finite number (use FILE or FILE:0.8)");
        return new LoraSpec(s[..colon], w);
    }

    /// <summary>A warning naming the adapters of <paramref name="path"/> that hold NaN or infinite values (they make every image black or noise), or null.</summary>
    public static string? NonFiniteWarning(string path, IReadOnlyList<LoraAdapter> adapters)
    {
        static bool Finite(Tensor t) => t.ToFloat32Array().All(float.IsFinite);
        var bad = adapters.Where(a => !float.IsFinite(a.Alpha) || !Finite(a.Down) || !Finite(a.Up)).Select(a => a.ModulePath).ToList();
        return bad.Count == 0 ? null
            : $"{path}: {bad.Count} of {adapters.Count} modules hold NaN or infinite values ({string.Join(", ", bad.Take(3))}{(bad.Count > 3 ? ", …" : "")}): the images will be black or noise; the LoRA is broken (a diverged training run?)";
    }
}

public sealed record ExportOptions
{
    public ExportFormat Format { get; init; } = ExportFormat.Ldm;
    public IReadOnlyList<LoraSpec> Loras { get; init; } = [];
    /// <summary>
    /// .safetensors files of fine-tuned weights that replace the model's before LoRAs are merged; keys are
    /// state-dict keys, optionally prefixed <c>unet.</c>, <c>text_encoder.</c> or <c>vae.</c>.
    /// </summary>
    public IReadOnlyList<string> WeightFiles { get; init; } = [];
    /// <summary>Element type of the output; null keeps the model's.</summary>
    public DType? FloatType { get; init; }
}

public sealed record ExportReport(int MergedModules, IReadOnlyList<string> Warnings);

/// <summary>
/// <c>cudadream export</c>: a model folder written by <c>import</c> (weights named by state-dict key),
/// with LoRAs merged (W' = W + m·(α/r)·Up@Down), as an ldm single-file checkpoint with exactly the keys
/// AUTOMATIC1111 loads, or as a new ONNX model folder. Import → export → import is the identity on the weights.
/// </summary>
public static class ModelExporter
{
    public static ExportReport Export(string modelDir, string outPath, ExportOptions options, Action<string>? progress = null)
    {
        if (!Directory.Exists(modelDir)) throw new CudaDreamException($"{modelDir}: model folder not found");
        if (options.FloatType is { } ft && ft is not (DType.F32 or DType.F16)) throw new CudaDreamException($"--dtype {ft}: only fp32 and fp16 are supported");
        var config = SdModelConfig.FromFolder(modelDir);
        var warnings = new List<string>();
        progress?.Invoke("reading weights");
        var (weights, models) = ReadFolderWeights(modelDir, config);
        try
        {
            return Export(modelDir, outPath, options, config, weights, warnings, progress);
        }
        finally
        {
            foreach (var m in models) m.Dispose();
        }
    }

    private static ExportReport Export(string modelDir, string outPath, ExportOptions options, SdModelConfig config, DiffusersWeights weights,
        List<string> warnings, Action<string>? progress)
    {
        int merged = 0;
        foreach (var file in options.WeightFiles)
        {
            progress?.Invoke($"replacing weights from {file}");
            weights = ReplaceWeights(weights, file);
        }
        if (options.Loras.Count > 0)
        {
            progress?.Invoke("merging LoRA");
            (weights, merged) = MergeLoras(weights, options.Loras, warnings);
        }
        var dtype = options.FloatType ?? weights.UNet.Values.First().DType;

        if (options.Format == ExportFormat.Ldm)
        {
            progress?.Invoke("writing checkpoint");
            WriteLdm(outPath, config, weights, dtype);
        }
        else
        {
            var scheduler = Path.Combine(modelDir, "scheduler", "scheduler_config.json");
            var tokenizer = Path.Combine(modelDir, "tokenizer");
            foreach (var f in OnnxModelFolder.TokenizerFiles)
                if (!File.Exists(Path.Combine(tokenizer, f))) throw new CudaDreamException($"{tokenizer}: no {f}");
            OnnxModelFolder.Write(outPath, new OnnxModelFolder.Contents(config, weights, dtype, tokenizer,
                File.Exists(scheduler) ? File.ReadAllText(scheduler) : OnnxModelFolder.Sd15SchedulerConfig), progress);
        }
        return new ExportReport(merged, warnings);
    }

    /// <summary>
    /// The weights of an import-written folder, checked against the architecture's table. The tensors view
    /// the opened models' memory maps; dispose the returned models when done with them.
    /// </summary>
    public static (DiffusersWeights Weights, List<OnnxModel> Models) ReadFolderWeights(string modelDir, SdModelConfig config)
    {
        var models = new List<OnnxModel>();
        try
        {
            Dictionary<string, Tensor> Read(params string[] graphs)
            {
                var all = new Dictionary<string, Tensor>(StringComparer.Ordinal);
                foreach (var g in graphs)
                {
                    var m = OnnxModel.Load(Path.Combine(modelDir, g, "model.onnx"));
                    models.Add(m);
                    foreach (var (k, v) in m.Initializers) all[k] = v;
                }
                return all;
            }
            var unet = Read("unet");
            var vae = Read("vae_encoder", "vae_decoder");
            var text = Read("text_encoder");
            var missing = new List<string>();
            var misshaped = new List<string>();
            foreach (var row in CheckpointNames.Table(config))
            {
                var source = row.Component switch { Components.UNet => unet, Components.Vae => vae, _ => text };
                if (!source.TryGetValue(row.Diffusers, out var t)) missing.Add($"{row.Component}:{row.Diffusers}");
                else if (!Shapes.Equal(t.Shape, row.Shape)) misshaped.Add($"{row.Diffusers} is {Shapes.Format(t.Shape)}, expected {Shapes.Format(row.Shape)}");
            }
            if (missing.Count > 0 || misshaped.Count > 0)
                throw new CudaDreamException($"{modelDir}: the graphs' weights are not named by state-dict key as `cudadream import` writes them " +
                    $"({missing.Count} missing{(missing.Count > 0 ? ": " + string.Join(", ", missing.Take(5)) : "")}" +
                    $"{(misshaped.Count > 0 ? "; mis-shaped: " + string.Join("; ", misshaped.Take(5)) : "")}); re-import the checkpoint first");
            return (new DiffusersWeights(unet, vae, text), models);
        }
        catch
        {
            foreach (var m in models) m.Dispose();
            throw;
        }
    }

    /// <summary>
    /// The weights with those of <paramref name="file"/> (fine-tuned layers) put in their place; every key
    /// must name a weight of the model with its shape.
    /// </summary>
    public static DiffusersWeights ReplaceWeights(DiffusersWeights weights, string file)
    {
        var parts = new Dictionary<string, Dictionary<string, Tensor>>
        {
            [Components.UNet] = new(weights.UNet, StringComparer.Ordinal),
            [Components.Vae] = new(weights.Vae, StringComparer.Ordinal),
            [Components.TextEncoder] = new(weights.TextEncoder, StringComparer.Ordinal),
        };
        var problems = new List<string>();
        foreach (var (name, tensor) in SafetensorsFile.ReadAll(file))
        {
            var (component, key) = name switch
            {
                _ when name.StartsWith("unet.", StringComparison.Ordinal) => (Components.UNet, name["unet.".Length..]),
                _ when name.StartsWith("vae.", StringComparison.Ordinal) => (Components.Vae, name["vae.".Length..]),
                _ when name.StartsWith("text_encoder.", StringComparison.Ordinal) => (Components.TextEncoder, name["text_encoder.".Length..]),
                _ when name.StartsWith("text_model.", StringComparison.Ordinal) => (Components.TextEncoder, name),
                _ => (Components.UNet, name),
            };
            if (!parts[component].TryGetValue(key, out var current)) { problems.Add($"'{name}' is no {component} weight"); continue; }
            if (!Shapes.Equal(current.Shape, tensor.Shape)) { problems.Add($"'{name}' is {Shapes.Format(tensor.Shape)}, the model's is {Shapes.Format(current.Shape)}"); continue; }
            if (!tensor.DType.IsFloat()) { problems.Add($"'{name}' holds {tensor.DType}"); continue; }
            parts[component][key] = tensor.To(current.DType);
        }
        if (problems.Count > 0)
            throw new InvalidFileException(file, $"{problems.Count} tensors do not fit the model: {string.Join("; ", problems.Take(10))}{(problems.Count > 10 ? "; …" : "")}");
        return new DiffusersWeights(parts[Components.UNet], parts[Components.Vae], parts[Components.TextEncoder]);
    }

    /// <summary>The modules of a model a LoRA may adapt: every linear and conv weight of the UNet and text encoder (not embeddings).</summary>
    public static List<LoraTarget> LoraTargets(DiffusersWeights weights)
    {
        var targets = new List<LoraTarget>();
        foreach (var (component, dict) in new[] { (LoraComponents.UNet, weights.UNet), (LoraComponents.TextEncoder, weights.TextEncoder) })
            foreach (var (key, t) in dict)
                if (key.EndsWith(".weight", StringComparison.Ordinal) && t.Rank is 2 or 4 && !key.Contains("embedding", StringComparison.Ordinal))
                    targets.Add(new LoraTarget(component, key[..^".weight".Length], t.Shape));
        return targets;
    }

    public static (DiffusersWeights Weights, int MergedModules) MergeLoras(DiffusersWeights weights, IReadOnlyList<LoraSpec> loras, List<string> warnings)
    {
        var targets = LoraTargets(weights);
        var perModule = new Dictionary<(string Component, string Module), List<(LoraAdapter, float)>>();
        foreach (var spec in loras)
        {
            var result = LoraFile.Load(spec.Path, targets);
            if (result.Adapters.Count == 0)
                throw new CudaDreamException($"{spec.Path}: no key matches a module of this model ({result.UnmatchedKeys.Count} keys, e.g. {string.Join(", ", result.UnmatchedKeys.Take(3))})");
            if (LoraSpec.NonFiniteWarning(spec.Path, result.Adapters) is { } nonFinite) warnings.Add(nonFinite);
            if (result.UnmatchedKeys.Count > 0)
                warnings.Add($"{spec.Path}: {result.UnmatchedKeys.Count} keys match no module and were not applied: {string.Join(", ", result.UnmatchedKeys.Take(10))}{(result.UnmatchedKeys.Count > 10 ? ", …" : "")}");
            foreach (var a in result.Adapters)
            {
                if (!perModule.TryGetValue((a.Component, a.ModulePath), out var list)) perModule[(a.Component, a.ModulePath)] = list = new();
                list.Add((a, spec.Multiplier));
            }
        }
        var unet = new Dictionary<string, Tensor>(weights.UNet, StringComparer.Ordinal);
        var text = new Dictionary<string, Tensor>(weights.TextEncoder, StringComparer.Ordinal);
        foreach (var ((component, module), adapters) in perModule)
        {
            var dict = component == LoraComponents.UNet ? unet : text;
            var key = module + ".weight";
            dict[key] = LoraMerge.Apply(dict[key], adapters);
        }
        return (new DiffusersWeights(unet, weights.Vae, text), perModule.Count);
    }

    /// <summary>The ldm single file: every weight under its ldm key and shape (VAE attention as 1×1 convs), no other keys.</summary>
    public static void WriteLdm(string path, SdModelConfig config, DiffusersWeights weights, DType dtype)
    {
        var tensors = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var row in CheckpointNames.Table(config))
        {
            var t = weights.Of(row.Component)[row.Diffusers];
            if (row.IsConvInLdm) t = t.Reshape(row.LdmShape);
            tensors[row.Ldm] = t.DType == dtype ? t : t.To(dtype);
        }
        SafetensorsWriter.Write(path, tensors);
    }
}
