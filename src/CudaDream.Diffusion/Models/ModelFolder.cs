using System.Text.Json;
using CudaDream.Diffusion.Models.Import;
using CudaDream.Diffusion.Schedulers;
using CudaDream.Engine;
using CudaDream.Engine.Training.Lora;

namespace CudaDream.Diffusion.Models;

/// <summary>
/// A diffusers ONNX pipeline folder opened for sampling — the layout <see cref="OnnxModelFolder"/> writes and
/// diffusers' <c>OnnxStableDiffusionPipeline</c> loads: <c>model_index.json</c>, <c>tokenizer/</c>,
/// <c>scheduler/scheduler_config.json</c>, <c>text_encoder/model.onnx</c>, <c>unet/model.onnx</c> (+ external
/// <c>weights.pb</c>), <c>vae_decoder/model.onnx</c> and, for img2img, <c>vae_encoder/model.onnx</c>.
/// <see cref="Open"/> checks every part and their agreement (latent channels, text width, vocabulary) and reports
/// what is missing or inconsistent by name before any engine loads a network.
/// </summary>
public sealed class ModelFolder
{
    public const string TextEncoder = "text_encoder";
    public const string UNet = "unet";
    public const string VaeEncoder = "vae_encoder";
    public const string VaeDecoder = "vae_decoder";
    public const string Tokenizer = "tokenizer";
    public const string Scheduler = "scheduler";
    public const string ModelFile = "model.onnx";
    public const string ModelIndexFile = "model_index.json";
    private const long MaxJsonBytes = 1 << 20;

    /// <summary>Parts a folder must have, as model_index.json names them.</summary>
    private static readonly string[] RequiredComponents = [TextEncoder, UNet, VaeDecoder, Tokenizer, Scheduler];

    private readonly Lazy<ModelFolderGraph?> _vaeEncoder;

    public string Root { get; }
    public string Name => Path.GetFileName(Root.TrimEnd(Path.DirectorySeparatorChar, Path.AltDirectorySeparatorChar));
    public string TokenizerDir => Path.Combine(Root, Tokenizer);
    public SchedulerConfig SchedulerConfig { get; }
    public ModelFolderGraph TextEncoderGraph { get; }
    public ModelFolderGraph UNetGraph { get; }
    public ModelFolderGraph VaeDecoderGraph { get; }
    /// <summary>Latent channels (4 for SD 1.x), from the UNet's conv_in.</summary>
    public int LatentChannels { get; }
    /// <summary>Pixels per latent along each side: 2^(VAE decoder upsamplers), 8 for SD.</summary>
    public int VaeScaleFactor { get; }
    /// <summary>The VAE's latent scaling factor (vae config scaling_factor; SD 1.x: 0.18215).</summary>
    public float LatentScale { get; }
    public ImageSizeRule SizeRule { get; }
    /// <summary>The size the UNet was trained at when the folder says so (unet/config.json sample_size), else 512.</summary>
    public int DefaultImageSize { get; }

    private ModelFolder(string root, SchedulerConfig scheduler, ModelFolderGraph text, ModelFolderGraph unet, ModelFolderGraph decoder)
    {
        Root = root;
        SchedulerConfig = scheduler;
        TextEncoderGraph = text;
        UNetGraph = unet;
        VaeDecoderGraph = decoder;
        _vaeEncoder = new(() => File.Exists(ModelPath(VaeEncoder)) ? ModelFolderGraph.Load(ModelPath(VaeEncoder)) : null);
        VaeScaleFactor = 1 << decoder.CountResizes();
        int downsamplers = unet.CountDownsamplers();
        bool fixedScale = unet.HasFixedScaleUpsampling();
        SizeRule = new ImageSizeRule(fixedScale ? VaeScaleFactor << downsamplers : VaeScaleFactor, fixedScale, downsamplers, VaeScaleFactor);
        LatentChannels = SlotShape(unet, UNet, "conv_in")?[1] ?? 4;
        LatentScale = ReadNumber(Path.Combine(root, VaeDecoder, "config.json"), "scaling_factor") is double s ? (float)s : 0.18215f;
        DefaultImageSize = ReadNumber(Path.Combine(root, UNet, "config.json"), "sample_size") is double size && size >= 1 && size <= 1024
            ? (int)size * VaeScaleFactor : 512;
    }

    public string ModelPath(string component) => Path.Combine(Root, component, ModelFile);

    /// <summary>Opens and checks a model folder; throws <see cref="CudaDreamException"/> naming the missing or inconsistent part.</summary>
    public static ModelFolder Open(string directory)
    {
        if (string.IsNullOrWhiteSpace(directory) || !Directory.Exists(directory))
            throw new CudaDreamException($"{directory}: model folder not found");
        var root = Path.GetFullPath(directory);
        CheckModelIndex(root);
        CheckPartsPresent(root);
        var scheduler = SchedulerConfig.Load(Path.Combine(root, Scheduler, "scheduler_config.json"));
        var text = ModelFolderGraph.Load(Path.Combine(root, TextEncoder, ModelFile));
        var unet = ModelFolderGraph.Load(Path.Combine(root, UNet, ModelFile));
        var decoder = ModelFolderGraph.Load(Path.Combine(root, VaeDecoder, ModelFile));
        RequirePorts(text, ["input_ids"], ["last_hidden_state"]);
        RequirePorts(unet, ["sample", "timestep", "encoder_hidden_states"], ["out_sample"]);
        RequirePorts(decoder, ["latent_sample"], ["sample"]);
        var folder = new ModelFolder(root, scheduler, text, unet, decoder);
        folder.CheckConsistency();
        return folder;
    }

    /// <summary>The VAE encoder (img2img, training); an error naming the missing file and what needs it when the folder has none.</summary>
    public ModelFolderGraph RequireVaeEncoder(string neededBy = "img2img")
    {
        var g = _vaeEncoder.Value ?? throw new CudaDreamException($"{Root}: {neededBy} needs {VaeEncoder}/{ModelFile}, which this model folder does not have");
        RequirePorts(g, ["sample"], []);
        int moments = SlotShape(g, VaeEncoder, "quant_conv")?[0] ?? 2 * LatentChannels;
        if (moments != 2 * LatentChannels)
            throw new CudaDreamException($"{Root}: inconsistent model folder: {VaeEncoder} produces {moments / 2} latent channels, {UNet} takes {LatentChannels}");
        return g;
    }

    /// <summary>Throws with the nearest valid sizes when width × height does not suit this model's graphs;
    /// <paramref name="setting"/> names where the size came from (default: the sampler's --width/--height).</summary>
    public void CheckImageSize(int width, int height, string? setting = null)
    {
        if (SizeRule.Fits(width) && SizeRule.Fits(height)) return;
        throw new CudaDreamException($"{setting ?? $"--width {width} --height {height}"}: {SizeRule.Explain()}; nearest valid sizes: {SizeRule.Suggest(width, height)}");
    }

    /// <summary>Every linear and conv weight of the UNet and text encoder a LoRA may adapt (embedding tables are not among them: they feed Gather, not a linear op).</summary>
    public IReadOnlyList<LoraWeightSlot> LoraSlots() =>
        UNetGraph.LinearWeights(LoraComponents.UNet).Concat(TextEncoderGraph.LinearWeights(LoraComponents.TextEncoder)).ToList();

    // ---- checks ---------------------------------------------------------------------------

    private static void CheckModelIndex(string root)
    {
        var path = Path.Combine(root, ModelIndexFile);
        if (!File.Exists(path))
            throw new CudaDreamException($"{root}: incomplete model folder: no {ModelIndexFile} (expected a diffusers ONNX pipeline folder, as `cudadream import` writes)");
        using var doc = ReadJson(path) ?? throw new InvalidFileException(path, "not a JSON object");
        var index = doc.RootElement;
        bool IsOnnx(string component) => index.TryGetProperty(component, out var e) && e.ValueKind == JsonValueKind.Array
            && e.GetArrayLength() == 2 && e[1].ValueKind == JsonValueKind.String && e[1].GetString() == "OnnxRuntimeModel";
        if (!IsOnnx(UNet) && File.Exists(Path.Combine(root, UNet, "config.json")) && !File.Exists(Path.Combine(root, UNet, ModelFile)))
            throw new InvalidFileException(path, "this is a PyTorch diffusers folder, not an ONNX one; convert it with `cudadream import`");
        var missing = RequiredComponents.Where(c => !index.TryGetProperty(c, out var e) || e.ValueKind != JsonValueKind.Array || e.GetArrayLength() != 2 || e[0].ValueKind == JsonValueKind.Null).ToList();
        if (missing.Count > 0)
            throw new InvalidFileException(path, $"does not list {string.Join(", ", missing)} (a Stable Diffusion pipeline needs {string.Join(", ", RequiredComponents)})");
        var notOnnx = new[] { TextEncoder, UNet, VaeDecoder }.Where(c => !IsOnnx(c)).ToList();
        if (notOnnx.Count > 0)
            throw new InvalidFileException(path, $"{string.Join(", ", notOnnx)} {(notOnnx.Count == 1 ? "is" : "are")} not an OnnxRuntimeModel");
    }

    private static void CheckPartsPresent(string root)
    {
        var missing = new List<string>();
        foreach (var c in new[] { TextEncoder, UNet, VaeDecoder })
            if (!File.Exists(Path.Combine(root, c, ModelFile))) missing.Add($"{c}/{ModelFile}");
        foreach (var f in new[] { "vocab.json", "merges.txt" })
            if (!File.Exists(Path.Combine(root, Tokenizer, f))) missing.Add($"{Tokenizer}/{f}");
        if (!File.Exists(Path.Combine(root, Scheduler, "scheduler_config.json"))) missing.Add($"{Scheduler}/scheduler_config.json");
        if (missing.Count > 0) throw new CudaDreamException($"{root}: incomplete model folder: missing {string.Join(", ", missing)}");
    }

    private static void RequirePorts(ModelFolderGraph g, string[] inputs, string[] outputs)
    {
        var missing = inputs.Where(i => g.Input(i) == null).Select(i => $"input '{i}'")
            .Concat(outputs.Where(o => g.Output(o) == null).Select(o => $"output '{o}'")).ToList();
        if (missing.Count > 0)
            throw new InvalidFileException(g.Path, $"has no {string.Join(", ", missing)} (has inputs {string.Join(", ", g.Inputs.Select(i => i.Name))}; outputs {string.Join(", ", g.Outputs.Select(o => o.Name))})");
    }

    /// <summary>Parts from different models disagree on these widths; caught here instead of as a shape error mid-run.</summary>
    private void CheckConsistency()
    {
        var problems = new List<string>();
        void Compare(string what, int? a, string aName, int? b, string bName)
        {
            if (a is int x && b is int y && x != y) problems.Add($"{what}: {aName} {x}, {bName} {y}");
        }
        var unetOut = SlotShape(UNetGraph, UNet, "conv_out")?[0];
        var decoderIn = SlotShape(VaeDecoderGraph, VaeDecoder, "post_quant_conv")?[1];
        Compare("latent channels", LatentChannels, "unet conv_in", unetOut, "unet conv_out");
        Compare("latent channels", LatentChannels, "unet", decoderIn, "vae_decoder");

        int? textWidth = TextEncoderGraph.Initializers.FirstOrDefault(kv => kv.Key.EndsWith("final_layer_norm.weight", StringComparison.Ordinal)).Value.Shape?[0];
        int? contextDim = UNetGraph.Input("encoder_hidden_states")?.Dims is { Length: 3 } d && d[2] > 0 ? d[2]
            : UNetGraph.LinearWeights(UNet).FirstOrDefault(s => s.ModulePath.EndsWith("attn2.to_k", StringComparison.Ordinal))?.WeightShape[1];
        Compare("text width", textWidth, "text_encoder", contextDim, "unet cross-attention");

        int? embeddingRows = TextEncoderGraph.Initializers.FirstOrDefault(kv => kv.Key.EndsWith("token_embedding.weight", StringComparison.Ordinal)).Value.Shape?[0];
        int? vocab = VocabularySize(Path.Combine(TokenizerDir, "vocab.json"));
        if (vocab is int v && embeddingRows is int rows && v > rows)
            problems.Add($"vocabulary: tokenizer has {v} tokens, text_encoder embeds {rows}");
        if (problems.Count > 0)
            throw new CudaDreamException($"{Root}: inconsistent model folder ({string.Join("; ", problems)}): are the parts from different models?");
    }

    private static int[]? SlotShape(ModelFolderGraph g, string component, string module) =>
        g.LinearWeights(component).FirstOrDefault(s => s.ModulePath == module)?.WeightShape;

    /// <summary>Largest id + 1 of vocab.json (the tokenizer itself reads and checks the file).</summary>
    private static int? VocabularySize(string path)
    {
        try
        {
            using var doc = JsonDocument.Parse(Engine.Formats.Utf8Text.Require(path, File.ReadAllBytes(path)));
            if (doc.RootElement.ValueKind != JsonValueKind.Object) return null;
            int max = -1;
            foreach (var p in doc.RootElement.EnumerateObject())
                if (p.Value.ValueKind == JsonValueKind.Number && p.Value.TryGetInt32(out int id)) max = Math.Max(max, id);
            return max + 1;
        }
        catch (JsonException e) { throw new InvalidFileException(path, $"not valid JSON ({e.Message})"); }
    }

    private static JsonDocument? ReadJson(string path)
    {
        long length = new FileInfo(path).Length;
        if (length > MaxJsonBytes) throw new InvalidFileException(path, $"{length} bytes is too large for a config file");
        JsonDocument doc;
        try { doc = JsonDocument.Parse(Engine.Formats.Utf8Text.Require(path, File.ReadAllBytes(path)), new JsonDocumentOptions { MaxDepth = 16 }); }
        catch (JsonException e) { throw new InvalidFileException(path, $"not valid JSON ({e.Message})"); }
        if (doc.RootElement.ValueKind == JsonValueKind.Object) return doc;
        doc.Dispose();
        return null;
    }

    private static double? ReadNumber(string path, string key)
    {
        if (!File.Exists(path)) return null;
        using var doc = ReadJson(path);
        return doc != null && doc.RootElement.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetDouble() : null;
    }
}

/// <summary>
/// Which image sizes a model's graphs accept. Every side is a multiple of <see cref="Multiple"/>: the VAE factor
/// (8) when the UNet's upsamplers take their size from the skip connection (CudaDream's builder graphs), or
/// 8 · 2^downsamplers when they scale by a fixed factor (torch exports: 64 for SD 1.5), since then each
/// downsampler must halve an even size for the upsampled tensor to meet its skip connection again.
/// </summary>
public sealed record ImageSizeRule(int Multiple, bool FixedScaleUpsampling, int Downsamplers, int VaeScaleFactor)
{
    public const int MaxSide = 8192;

    public bool Fits(int side) => side >= Multiple && side <= MaxSide && side % Multiple == 0;

    public string Explain() => FixedScaleUpsampling
        ? $"this model needs sides that are multiples of {Multiple} (its UNet upsamples by a fixed factor after each of {Downsamplers} downsamplers, on latents {VaeScaleFactor}x smaller)"
        : $"this model needs sides that are multiples of {Multiple}, from {Multiple} to {MaxSide}";

    /// <summary>"448x512 or 512x512": each side rounded down and up to the multiple (deduplicated, in range).</summary>
    public string Suggest(int width, int height)
    {
        var ws = Neighbours(width);
        var hs = Neighbours(height);
        var sizes = ws.SelectMany(w => hs.Select(h => $"{w}x{h}")).Distinct().ToList();
        return sizes.Count == 1 ? sizes[0] : string.Join(", ", sizes.Take(sizes.Count - 1)) + " or " + sizes[^1];
    }

    private int[] Neighbours(int side)
    {
        if (Fits(side)) return [side];
        int down = Math.Clamp(side / Multiple * Multiple, Multiple, MaxSide / Multiple * Multiple);
        int up = Math.Clamp((side + Multiple - 1) / Multiple * Multiple, Multiple, MaxSide / Multiple * Multiple);
        return down == up ? [down] : [down, up];
    }
}
