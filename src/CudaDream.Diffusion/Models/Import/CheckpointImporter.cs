using System.Text.Json;
using CudaDream.Diffusion.Models.Builder;
using CudaDream.Engine;
using CudaDream.Engine.Formats;
using CudaDream.Engine.Tensors;

namespace CudaDream.Diffusion.Models.Import;

/// <summary>Options of <see cref="CheckpointImporter.Import"/>.</summary>
public sealed record ImportOptions
{
    /// <summary>Element type of the written graphs: F32 or F16.</summary>
    public DType FloatType { get; init; } = DType.F32;

    /// <summary>Tokenizer folder (vocab.json, merges.txt, …); default: the model's own (diffusers folder) or the bundled CLIP ViT-L/14 one.</summary>
    public string? TokenizerDir { get; init; }

    /// <summary>Folder with unet/config.json, vae/config.json, text_encoder/config.json, for checkpoints whose widths are not SD 1.x's.</summary>
    public string? ConfigDir { get; init; }

    /// <summary>Import the UNet from the EMA copies (<c>model_ema.*</c>) of an ldm checkpoint.</summary>
    public bool UseEma { get; init; }
}

/// <summary>What an import did.</summary>
public sealed record ImportReport(string SourceKind, SdModelConfig Config, long Parameters, IReadOnlyList<string> Warnings);

/// <summary>
/// <c>cudadream import</c>: an original-SD single-file <c>.safetensors</c> checkpoint (fp32, fp16 or bf16)
/// or a diffusers folder of <c>.safetensors</c> → a complete diffusers ONNX model folder. Every input
/// problem (pickle file, truncated file, wrong family, missing or mis-shaped keys) is found before
/// anything is written; the output folder appears atomically.
/// </summary>
public static class CheckpointImporter
{
    private static readonly string[] PickleExtensions = [".ckpt", ".pt", ".pth", ".bin", ".pkl"];

    public static ImportReport Import(string source, string outDir, ImportOptions options, Action<string>? progress = null)
    {
        if (options.FloatType is not (DType.F32 or DType.F16)) throw new CudaDreamException($"--dtype {options.FloatType}: only fp32 and fp16 are supported");
        if (Directory.Exists(source)) return ImportDiffusersFolder(source, outDir, options, progress);
        RefusePickle(source);
        using var file = SafetensorsFile.Open(source);
        var warnings = new List<string>();
        var detected = LdmCheckpoint.Detect(file);
        SdModelConfig config;
        if (options.ConfigDir != null)
        {
            config = SdModelConfig.FromFolder(options.ConfigDir);
            LdmCheckpoint.CheckAgainstShapes(config, detected, source);
        }
        else if (detected.IsPublishedSd1) config = SdModelConfig.Sd15;
        else
            throw new CudaDreamException(
                $"{source}: the model's widths (UNet {string.Join(",", detected.Config.UNet.BlockOutChannels)}, text {detected.Config.TextEncoder.HiddenSize}) are not SD 1.x's published ones, " +
                "and norm groups and head counts cannot be read from weights; pass --config DIR with the model's unet/config.json, vae/config.json and text_encoder/config.json");
        var weights = LdmCheckpoint.Read(file, config, options.UseEma, warnings);
        var tokenizer = ResolveTokenizer(options.TokenizerDir, null, config.TextEncoder, source);
        Write(outDir, config, weights, options, tokenizer, OnnxModelFolder.Sd15SchedulerConfig, progress);
        return new ImportReport("ldm checkpoint", config, Count(weights), warnings);
    }

    /// <summary>Refuses pickle files (.ckpt & co., or pickle/zip bytes under another name) without reading past their first bytes.</summary>
    public static void RefusePickle(string path)
    {
        if (!File.Exists(path)) throw new InvalidFileException(path, "file not found");
        string why = $"{path}: this is a Python pickle checkpoint; loading a pickle can run arbitrary code, so CudaDream never unpickles one. " +
            "Convert it to .safetensors in a Python environment you trust (e.g. load it with torch.load(weights_only=True) and save with safetensors.torch.save_file, " +
            "or use AUTOMATIC1111's checkpoint merger with the safetensors format), then import the .safetensors file";
        if (PickleExtensions.Contains(Path.GetExtension(path).ToLowerInvariant())) throw new CudaDreamException(why);
        Span<byte> head = stackalloc byte[4];
        using (var f = File.OpenRead(path))
        {
            int n = f.ReadAtLeast(head, 4, throwOnEndOfStream: false);
            if (n >= 2 && head[0] == 0x80 && head[1] <= 5) throw new CudaDreamException(why);
            if (n >= 4 && head[0] == 'P' && head[1] == 'K' && head[2] == 3 && head[3] == 4) throw new CudaDreamException(why);
        }
    }

    private static ImportReport ImportDiffusersFolder(string dir, string outDir, ImportOptions options, Action<string>? progress)
    {
        var config = SdModelConfig.FromFolder(options.ConfigDir ?? dir);
        var warnings = new List<string>();
        var files = new List<SafetensorsFile>();
        try
        {
            SafetensorsFile Open(string sub, params string[] names)
            {
                foreach (var n in names)
                {
                    var p = Path.Combine(dir, sub, n);
                    if (File.Exists(p)) { var f = SafetensorsFile.Open(p); files.Add(f); return f; }
                }
                foreach (var pickle in new[] { "diffusion_pytorch_model.bin", "pytorch_model.bin" })
                    if (File.Exists(Path.Combine(dir, sub, pickle))) RefusePickle(Path.Combine(dir, sub, pickle));
                throw new CudaDreamException($"{Path.Combine(dir, sub)}: no {names[0]}");
            }
            var unet = Open("unet", "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors");
            var vae = Open("vae", "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors");
            var text = Open("text_encoder", "model.safetensors", "model.fp16.safetensors");

            var table = CheckpointNames.Table(config);
            var weights = new DiffusersWeights(
                Collect(unet, table, Components.UNet, k => k, warnings),
                Collect(vae, table, Components.Vae, CheckpointNames.ModernizeDiffusersVaeKey, warnings),
                Collect(text, table, Components.TextEncoder, CheckpointNames.ModernizeTextKey, warnings));
            var tokenizer = ResolveTokenizer(options.TokenizerDir, Path.Combine(dir, "tokenizer"), config.TextEncoder, dir);
            var scheduler = Path.Combine(dir, "scheduler", "scheduler_config.json");
            var schedulerJson = File.Exists(scheduler) ? File.ReadAllText(scheduler) : OnnxModelFolder.Sd15SchedulerConfig;
            Write(outDir, config, weights, options, tokenizer, schedulerJson, progress);
            return new ImportReport("diffusers folder", config, Count(weights), warnings);
        }
        finally
        {
            foreach (var f in files) f.Dispose();
        }
    }

    /// <summary>One network's weights from a diffusers file, keys normalised by <paramref name="modernize"/>; checked against the table.</summary>
    private static Dictionary<string, Tensor> Collect(SafetensorsFile file, IReadOnlyList<CheckpointKey> table, string component,
        Func<string, string> modernize, List<string> warnings)
    {
        var expected = table.Where(r => r.Component == component).ToDictionary(r => r.Diffusers, r => r.Shape, StringComparer.Ordinal);
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        var unused = new List<string>();
        var misshaped = new List<string>();
        foreach (var name in file.Names)
        {
            var key = modernize(name);
            if (!expected.TryGetValue(key, out var shape))
            {
                if (!name.EndsWith("position_ids", StringComparison.Ordinal)) unused.Add(name);
                continue;
            }
            var t = file.Get(name);
            if (!Shapes.Equal(t.Shape, shape))
            {
                // Some converters store the VAE attention projections as 1×1 convs.
                if (t.Shape.Length == 4 && t.Shape[2] == 1 && t.Shape[3] == 1 && Shapes.Equal(t.Shape[..2], shape)) t = t.Reshape(shape);
                else { misshaped.Add($"{name} is {Shapes.Format(t.Shape)}, expected {Shapes.Format(shape)}"); continue; }
            }
            result[key] = t;
        }
        var missing = expected.Keys.Where(k => !result.ContainsKey(k)).ToList();
        if (missing.Count > 0 || misshaped.Count > 0)
        {
            var parts = new List<string>();
            if (missing.Count > 0) parts.Add($"{missing.Count} keys missing: {string.Join(", ", missing.Take(10))}{(missing.Count > 10 ? ", …" : "")}");
            if (misshaped.Count > 0) parts.Add($"{misshaped.Count} keys mis-shaped: {string.Join("; ", misshaped.Take(10))}{(misshaped.Count > 10 ? "; …" : "")}");
            throw new InvalidFileException(file.Path, string.Join("; ", parts));
        }
        if (unused.Count > 0) warnings.Add($"{file.Path}: {unused.Count} keys unused: {string.Join(", ", unused.Take(10))}{(unused.Count > 10 ? ", …" : "")}");
        return result;
    }

    private static void Write(string outDir, SdModelConfig config, DiffusersWeights weights, ImportOptions options, string tokenizerDir,
        string schedulerJson, Action<string>? progress)
    {
        var staged = StageTokenizer(tokenizerDir);
        try
        {
            OnnxModelFolder.Write(outDir, new OnnxModelFolder.Contents(config, weights, options.FloatType, staged, schedulerJson), progress);
        }
        finally
        {
            if (staged != tokenizerDir) Directory.Delete(staged, true);
        }
    }

    /// <summary>A tokenizer folder with all four files: those the given folder lacks (special tokens, config) come from the bundled one.</summary>
    private static string StageTokenizer(string dir)
    {
        if (OnnxModelFolder.TokenizerFiles.All(f => File.Exists(Path.Combine(dir, f)))) return dir;
        var bundled = BundledTokenizerDir();
        var staged = Path.Combine(Path.GetTempPath(), $"cudadream-tokenizer-{Guid.NewGuid():N}");
        Directory.CreateDirectory(staged);
        foreach (var f in OnnxModelFolder.TokenizerFiles)
        {
            var own = Path.Combine(dir, f);
            File.Copy(File.Exists(own) ? own : Path.Combine(bundled, f), Path.Combine(staged, f));
        }
        return staged;
    }

    /// <summary>
    /// The tokenizer to ship with the model, checked against the text encoder's embedding rows: the given
    /// folder, else the model's own, else the bundled CLIP ViT-L/14 tokenizer.
    /// </summary>
    private static string ResolveTokenizer(string? given, string? modelOwn, ClipTextConfig text, string source)
    {
        string dir = given ?? (modelOwn != null && File.Exists(Path.Combine(modelOwn, "vocab.json")) ? modelOwn : BundledTokenizerDir());
        foreach (var f in new[] { "vocab.json", "merges.txt" })
            if (!File.Exists(Path.Combine(dir, f))) throw new CudaDreamException($"{dir}: tokenizer folder has no {f}");
        int vocab = VocabularySize(Path.Combine(dir, "vocab.json"));
        if (vocab != text.VocabSize)
        {
            if (given == null)
                throw new CudaDreamException($"{source}: the text encoder has {text.VocabSize} token embeddings but the tokenizer in {dir} has {vocab} tokens; pass --tokenizer DIR with this model's vocab.json and merges.txt");
            throw new CudaDreamException($"{dir}: the tokenizer has {vocab} tokens but the text encoder of {source} has {text.VocabSize} token embeddings");
        }
        return dir;
    }

    private static int VocabularySize(string path)
    {
        try
        {
            using var doc = JsonDocument.Parse(Utf8Text.Require(path, File.ReadAllBytes(path)));
            if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new InvalidFileException(path, "vocab.json is not a JSON object");
            return doc.RootElement.EnumerateObject().Count();
        }
        catch (JsonException e) { throw new InvalidFileException(path, $"not valid JSON ({e.Message})"); }
    }

    /// <summary>
    /// models/clip-vit-large-patch14 of the CudaDream installation: $CUDADREAM_MODELS, else the first
    /// <c>models/</c> folder above the program (the repository or an unpacked release).
    /// </summary>
    public static string BundledTokenizerDir()
    {
        const string name = "clip-vit-large-patch14";
        var env = Environment.GetEnvironmentVariable("CUDADREAM_MODELS");
        if (!string.IsNullOrEmpty(env) && File.Exists(Path.Combine(env, name, "vocab.json"))) return Path.Combine(env, name);
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d != null; d = d.Parent)
        {
            var candidate = Path.Combine(d.FullName, "models", name);
            if (File.Exists(Path.Combine(candidate, "vocab.json"))) return candidate;
        }
        throw new CudaDreamException($"the bundled tokenizer (models/{name}) was not found above {AppContext.BaseDirectory}; set CUDADREAM_MODELS to the folder holding it or pass --tokenizer DIR");
    }

    private static long Count(DiffusersWeights w) =>
        w.UNet.Values.Concat(w.Vae.Values).Concat(w.TextEncoder.Values).Sum(t => (long)t.Numel);
}
