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
    public static LoraSpec Parse(string s)
    {
        int colon = s.LastIndexOf(':');
        if (colon > 0 && float.TryParse(s[(colon + 1)..], NumberStyles.Float, CultureInfo.InvariantCulture, out float w))
            return new LoraSpec(s[..colon], w);
        return new LoraSpec(s);
    }
}

public sealed record ExportOptions
{
    public ExportFormat Format { get; init; } = ExportFormat.Ldm;
    public IReadOnlyList<LoraSpec> Loras { get; init; } = [];
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
        var weights = ReadFolderWeights(modelDir, config);
        int merged = 0;
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

    /// <summary>The weights of an import-written folder, checked against the architecture's table.</summary>
    public static DiffusersWeights ReadFolderWeights(string modelDir, SdModelConfig config)
    {
        Dictionary<string, Tensor> Read(params string[] graphs)
        {
            var all = new Dictionary<string, Tensor>(StringComparer.Ordinal);
            foreach (var g in graphs)
                foreach (var (k, v) in OnnxWeightReader.Read(Path.Combine(modelDir, g, "model.onnx"))) all[k] = v;
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
        return new DiffusersWeights(unet, vae, text);
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
