using System.Text.Json;
using System.Text.Json.Nodes;
using CudaDream.Diffusion.Models.Builder;
using CudaDream.Engine;
using CudaDream.Engine.Formats;
using CudaDream.Engine.Tensors;

namespace CudaDream.Diffusion.Models.Import;

/// <summary>
/// Writes a complete diffusers ONNX model folder (what diffusers' <c>OnnxStableDiffusionPipeline</c>
/// loads): <c>model_index.json</c>, <c>scheduler/</c>, <c>tokenizer/</c>, and <c>text_encoder</c>, <c>unet</c>
/// (weights in <c>weights.pb</c>), <c>vae_encoder</c>, <c>vae_decoder</c> graphs, each with the diffusers or
/// transformers <c>config.json</c> it was built from. The folder appears whole or not at all: it is
/// assembled in a hidden sibling folder and renamed into place.
/// </summary>
public static class OnnxModelFolder
{
    /// <summary>SD 1.5's scheduler: PNDM with the published values (no timestep_spacing key, as in SD 1.5's file).</summary>
    public const string Sd15SchedulerConfig = """
        {
          "_class_name": "PNDMScheduler",
          "_diffusers_version": "0.21.4",
          "beta_end": 0.012,
          "beta_schedule": "scaled_linear",
          "beta_start": 0.00085,
          "clip_sample": false,
          "num_train_timesteps": 1000,
          "prediction_type": "epsilon",
          "set_alpha_to_one": false,
          "skip_prk_steps": true,
          "steps_offset": 1,
          "trained_betas": null
        }

        """;

    public static readonly string[] TokenizerFiles = ["vocab.json", "merges.txt", "special_tokens_map.json", "tokenizer_config.json"];

    /// <summary>What goes into a folder besides the weights.</summary>
    public sealed record Contents(SdModelConfig Config, DiffusersWeights Weights, DType FloatType, string TokenizerDir, string SchedulerConfigJson);

    public static void Write(string outDir, Contents contents, Action<string>? progress = null)
    {
        var target = Path.GetFullPath(outDir);
        if (File.Exists(target)) throw new CudaDreamException($"{outDir}: exists and is a file");
        if (Directory.Exists(target) && Directory.EnumerateFileSystemEntries(target).Any())
            throw new CudaDreamException($"{outDir}: folder exists and is not empty; choose a new --out or remove it");
        var parent = Path.GetDirectoryName(target)!;
        Directory.CreateDirectory(parent);
        var staging = Path.Combine(parent, $".{Path.GetFileName(target)}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        try
        {
            WriteInto(staging, contents, progress);
            if (Directory.Exists(target)) Directory.Delete(target);
            Directory.Move(staging, target);
        }
        catch
        {
            try { if (Directory.Exists(staging)) Directory.Delete(staging, true); } catch { /* hidden and named as temporary */ }
            throw;
        }
    }

    private static void WriteInto(string dir, Contents c, Action<string>? progress)
    {
        Directory.CreateDirectory(dir);
        var options = new GraphBuildOptions { FloatType = c.FloatType };
        var w = c.Weights;

        progress?.Invoke("text_encoder");
        Save(dir, "text_encoder", ClipTextGraph.Build(c.Config.TextEncoder, new DictionaryWeights(w.TextEncoder), options), c.Config.TextEncoder.ToJson(), external: null);
        progress?.Invoke("unet");
        Save(dir, "unet", UNetGraph.Build(c.Config.UNet, new DictionaryWeights(w.UNet), options), c.Config.UNet.ToJson(), external: true);
        progress?.Invoke("vae_encoder");
        Save(dir, "vae_encoder", VaeGraphs.BuildEncoder(c.Config.Vae, new DictionaryWeights(w.Vae), options), c.Config.Vae.ToJson(), external: null);
        progress?.Invoke("vae_decoder");
        Save(dir, "vae_decoder", VaeGraphs.BuildDecoder(c.Config.Vae, new DictionaryWeights(w.Vae), options), c.Config.Vae.ToJson(), external: null);

        Directory.CreateDirectory(Path.Combine(dir, "tokenizer"));
        foreach (var f in TokenizerFiles)
            File.Copy(Path.Combine(c.TokenizerDir, f), Path.Combine(dir, "tokenizer", f));
        AtomicFile.WriteAllText(Path.Combine(dir, "scheduler", "scheduler_config.json"), c.SchedulerConfigJson);
        AtomicFile.WriteAllText(Path.Combine(dir, "model_index.json"), ModelIndexJson(SchedulerClass(c.SchedulerConfigJson)));
    }

    private static void Save(string dir, string name, BuiltGraph graph, string configJson, bool? external)
    {
        var sub = Path.Combine(dir, name);
        Directory.CreateDirectory(sub);
        graph.Save(Path.Combine(sub, "model.onnx"), new OnnxWriteOptions { ExternalData = external });
        AtomicFile.WriteAllText(Path.Combine(sub, "config.json"), configJson);
    }

    private static string SchedulerClass(string schedulerJson)
    {
        try { return JsonNode.Parse(schedulerJson)?["_class_name"]?.GetValue<string>() ?? "PNDMScheduler"; }
        catch (JsonException) { return "PNDMScheduler"; }
    }

    /// <summary>model_index.json as diffusers saves an OnnxStableDiffusionPipeline without safety checker.</summary>
    public static string ModelIndexJson(string schedulerClass = "PNDMScheduler") => new JsonObject
    {
        ["_class_name"] = "OnnxStableDiffusionPipeline",
        ["_diffusers_version"] = "0.21.4",
        ["feature_extractor"] = new JsonArray(null, null),
        ["requires_safety_checker"] = false,
        ["safety_checker"] = new JsonArray(null, null),
        ["scheduler"] = new JsonArray("diffusers", schedulerClass),
        ["text_encoder"] = new JsonArray("diffusers", "OnnxRuntimeModel"),
        ["tokenizer"] = new JsonArray("transformers", "CLIPTokenizer"),
        ["unet"] = new JsonArray("diffusers", "OnnxRuntimeModel"),
        ["vae_decoder"] = new JsonArray("diffusers", "OnnxRuntimeModel"),
        ["vae_encoder"] = new JsonArray("diffusers", "OnnxRuntimeModel"),
    }.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n";
}
