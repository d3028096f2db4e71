using System.Diagnostics;
using System.Globalization;
using CudaDream.Diffusion.Images;
using CudaDream.Diffusion.Models;
using CudaDream.Diffusion.Sampling.Engines;
using CudaDream.Diffusion.Schedulers;
using CudaDream.Diffusion.Tokenizers;
using CudaDream.Engine;
using CudaDream.Engine.Randomness;
using CudaDream.Engine.Tensors;
using CudaDream.Engine.Training.Lora;

namespace CudaDream.Diffusion.Sampling;

/// <summary>
/// Text-to-image and image-to-image sampling from a diffusers ONNX model folder, on ONNX Runtime or CudaDream's
/// engine, with LoRAs merged in memory. Follows diffusers' StableDiffusionPipeline / StableDiffusionImg2ImgPipeline
/// (0.21.4) step for step. A round — one <see cref="Generate"/> call — loads the networks it needs and releases
/// them when it ends (unless <see cref="SamplerOptions.KeepSessionsLoaded"/>), so a trainer can sample between
/// training steps and get the memory back. Not thread-safe.
/// <code>
/// using var sampler = Sampler.Create("models/sd15-onnx", new SamplerOptions { Loras = [LoraSource.Parse("dog.safetensors:0.8")] });
/// var result = sampler.Generate(new GenerationRequest { Prompt = "a photo of sks dog", Seed = 1 });
/// </code>
/// </summary>
public sealed class Sampler : IDisposable
{
    public const int MaxSteps = 1000;
    public const int MaxBatchSize = 64;
    public const int MaxBatchCount = 10_000;

    private readonly SamplerOptions _options;
    private readonly SamplerLoras _loras;
    private readonly ClipTokenizer _tokenizer;
    private readonly Func<PipelinePlan, IPipelineEngine> _makeEngine;
    private IPipelineEngine? _engine;
    private PipelinePlan? _plan;
    private int _planClipSkip;
    private bool _disposed;
    private bool _engineAnnounced;

    public ModelFolder Model { get; }
    /// <summary>Which engine runs the networks, in one line ("engine: ONNX Runtime, CPU execution provider (…)").</summary>
    public string EngineLine { get; }
    /// <summary>LoRA keys that matched no module, and similar notices; also passed to <see cref="SamplerOptions.Log"/>.</summary>
    public IReadOnlyList<string> Warnings { get; }
    /// <summary>Whether networks are loaded now (between rounds they are not, unless <see cref="SamplerOptions.KeepSessionsLoaded"/>).</summary>
    public bool HasLoadedSessions => _engine != null;
    /// <summary>Modules receiving LoRA weights.</summary>
    public int LoraModules => _loras.ModuleCount;

    private Sampler(ModelFolder model, SamplerOptions options, SamplerLoras loras, ClipTokenizer tokenizer, Func<PipelinePlan, IPipelineEngine> makeEngine, string engineLine)
    {
        Model = model;
        _options = options;
        _loras = loras;
        _tokenizer = tokenizer;
        _makeEngine = makeEngine;
        EngineLine = engineLine;
        Warnings = loras.Warnings;
    }

    public static Sampler Create(string modelDirectory, SamplerOptions? options = null) => Create(ModelFolder.Open(modelDirectory), options);

    /// <summary>Checks the LoRAs against the model and picks the engine (announced through <see cref="SamplerOptions.Log"/>
    /// when it first loads a network); no network is loaded yet.</summary>
    public static Sampler Create(ModelFolder model, SamplerOptions? options = null)
    {
        options ??= new SamplerOptions();
        var tokenizer = ClipTokenizer.FromFolder(model.TokenizerDir, new ClipTokenizerOptions { Cleaning = options.TextCleaning });
        CheckWeights(model, options.Weights);
        var loras = SamplerLoras.Resolve(model, options.Loras);
        var (make, line) = EngineSelection.Choose(options);
        foreach (var w in loras.Warnings) options.Log?.Invoke($"warning: {w}");
        return new Sampler(model, options, loras, tokenizer, make, line);
    }

    /// <summary>Replacement weights must name initializers of the network they replace, with their shape and element type.</summary>
    private static void CheckWeights(ModelFolder model, IReadOnlyDictionary<string, IReadOnlyDictionary<string, Tensor>> weights)
    {
        foreach (var (component, tensors) in weights)
        {
            var graph = component switch
            {
                ModelFolder.UNet => model.UNetGraph,
                ModelFolder.TextEncoder => model.TextEncoderGraph,
                _ => throw new CudaDreamException($"replacement weights for '{component}': only {ModelFolder.UNet} and {ModelFolder.TextEncoder} weights can be replaced"),
            };
            foreach (var (name, t) in tensors)
            {
                if (!graph.Initializers.TryGetValue(name, out var stored))
                    throw new CudaDreamException($"replacement weight '{name}': {graph.Path} has no such initializer");
                if (stored.DType != t.DType || !Shapes.Equal(stored.Shape, t.Shape))
                    throw new CudaDreamException($"replacement weight '{name}' is {t.DType}{Shapes.Format(t.Shape)}; {graph.Path} holds {stored.DType}{Shapes.Format(stored.Shape)}");
            }
        }
    }

    /// <summary>Generates BatchCount batches of BatchSize images. Every input is checked before a network runs.</summary>
    public GenerationResult Generate(GenerationRequest request, IProgress<SamplingProgress>? progress = null, CancellationToken cancellation = default)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var started = Stopwatch.StartNew();
        var job = Prepare(request);
        try
        {
            var engine = EngineFor(request.ClipSkip);
            return Run(job, engine, progress, cancellation) with { Elapsed = started.Elapsed };
        }
        finally
        {
            if (!_options.KeepSessionsLoaded) ReleaseSessions();
        }
    }

    /// <summary>The text encoder's output [N, L, D] for prompts (CLIP skip applied), e.g. for a trainer's embedding cache.</summary>
    public Tensor EncodePrompts(IReadOnlyList<string> prompts, int clipSkip = 1)
    {
        if (prompts.Count == 0) throw new ArgumentException("no prompts");
        var rows = prompts.Select((p, i) => Tokenize(p, $"prompt {i + 1}")).ToList();
        return EncodeTokens(Tensor.FromArray(rows.SelectMany(r => r).ToArray(), rows.Count, rows[0].Length), clipSkip);
    }

    /// <summary>The text encoder's output [N, L, D] for token ids [N, L] (int32), CLIP skip applied.</summary>
    public Tensor EncodeTokens(Tensor inputIds, int clipSkip = 1)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (clipSkip != 1) Model.TextEncoderGraph.ClipSkip(clipSkip);
        try
        {
            using var encoded = EngineFor(clipSkip).EncodeText(inputIds);
            return encoded.ToTensor();
        }
        finally
        {
            if (!_options.KeepSessionsLoaded) ReleaseSessions();
        }
    }

    /// <summary>The VAE encoder's posterior parameters [N, 2C, h, w] (mean, then log-variance) for images [N, 3, H, W] in [−1, 1].</summary>
    public Tensor EncodeMoments(Tensor pixels)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        Model.RequireVaeEncoder();
        try { return EngineFor(_engine == null ? 1 : _planClipSkip).EncodeMoments(pixels); }
        finally
        {
            if (!_options.KeepSessionsLoaded) ReleaseSessions();
        }
    }

    /// <summary>Scaled latents [N, C, h, w] of images [N, 3, H, W] in [−1, 1], drawn from the VAE posterior with <paramref name="noise"/> (e.g. for a trainer's latent cache).</summary>
    public Tensor EncodeLatents(Tensor pixels, INoiseSource noise) => LatentCodec.SampleLatents(EncodeMoments(pixels), Model.LatentScale, noise);

    /// <summary>Releases every loaded network and merged weight (the next round loads them again).</summary>
    public void ReleaseSessions()
    {
        _engine?.Dispose();
        _engine = null;
        _plan?.Release();
        _plan = null;
    }

    public void Dispose()
    {
        if (_disposed) return;
        ReleaseSessions();
        _disposed = true;
    }

    // ---- preparation: everything that can be wrong is found here ---------------------------

    private sealed record Job(GenerationRequest Request, int Width, int Height, int LatentHeight, int LatentWidth, Func<IScheduler> NewScheduler,
        int[] PromptIds, int[] NegativeIds, bool Guided, RgbImage? InitImage);

    private Job Prepare(GenerationRequest r)
    {
        if (r.Prompt == null) throw new CudaDreamException("a prompt is required");
        if (r.Steps < 1 || r.Steps > MaxSteps) throw new CudaDreamException($"--steps {r.Steps}: use 1..{MaxSteps}");
        if (!double.IsFinite(r.CfgScale) || r.CfgScale < 0 || r.CfgScale > 100) throw new CudaDreamException($"--cfg {r.CfgScale}: use a number in 0..100");
        if (r.BatchSize < 1 || r.BatchSize > MaxBatchSize) throw new CudaDreamException($"--batch-size {r.BatchSize}: use 1..{MaxBatchSize}");
        if (r.BatchCount < 1 || r.BatchCount > MaxBatchCount) throw new CudaDreamException($"--batch-count {r.BatchCount}: use 1..{MaxBatchCount}");
        if (r.Seed < 0) throw new CudaDreamException($"--seed {r.Seed}: seeds are 0 or more");
        if (r.ClipSkip != 1) Model.TextEncoderGraph.ClipSkip(r.ClipSkip); // validates the layer count

        IScheduler NewScheduler() => r.Scheduler == null ? SchedulerFactory.FromConfig(Model.SchedulerConfig) : SchedulerFactory.Create(r.Scheduler, Model.SchedulerConfig);
        var scheduler = NewScheduler();
        scheduler.SetTimesteps(r.Steps);

        int factor = Model.VaeScaleFactor;
        int width = r.Width, height = r.Height;
        if (r.InitialLatents is { } lat)
        {
            int total = r.BatchSize * r.BatchCount;
            if (lat.Rank != 4 || lat.Shape[0] != total || lat.Shape[1] != Model.LatentChannels)
                throw new CudaDreamException($"initial latents are {Shapes.Format(lat.Shape)}; this request needs [{total}, {Model.LatentChannels}, H/{factor}, W/{factor}] (batch size × batch count images)");
            if (!lat.DType.IsFloat()) throw new CudaDreamException($"initial latents are {lat.DType}, not floats");
            if (width == 0) width = lat.Shape[3] * factor;
            if (height == 0) height = lat.Shape[2] * factor;
            if (lat.Shape[2] * factor != height || lat.Shape[3] * factor != width)
                throw new CudaDreamException($"initial latents {Shapes.Format(lat.Shape)} are for {lat.Shape[3] * factor}x{lat.Shape[2] * factor} images, not {width}x{height}");
            if (r.InitImage != null) throw new CudaDreamException("initial latents and an init image cannot be combined (img2img starts from the encoded image)");
        }
        if (width == 0) width = Model.DefaultImageSize;
        if (height == 0) height = Model.DefaultImageSize;
        Model.CheckImageSize(width, height);

        if (r.InitImage != null)
        {
            if (!(r.Strength > 0 && r.Strength <= 1)) throw new CudaDreamException($"--strength {r.Strength}: use a number in (0, 1]");
            Model.RequireVaeEncoder();
            scheduler.GetImg2ImgTimesteps(r.Strength);
        }

        var prompt = Tokenize(r.Prompt, "prompt");
        var negative = Tokenize(r.NegativePrompt ?? "", "negative prompt");
        var init = r.InitImage == null ? null
            : ImagePreprocessor.Prepare(r.InitImage, new ImagePreprocessOptions { Width = width, Height = height, Filter = ResampleFilter.Lanczos }, new CropPlacement.Center(), flip: false);
        return new Job(r, width, height, height / factor, width / factor, NewScheduler, prompt, negative, r.CfgScale > 1.0, init);
    }

    private int[] Tokenize(string text, string what)
    {
        var t = _tokenizer.Encode(text);
        if (t.TruncationWarning != null) _options.Log?.Invoke($"warning: {what}: {t.TruncationWarning}");
        return t.InputIds;
    }

    // ---- running ---------------------------------------------------------------------------

    private IPipelineEngine EngineFor(int clipSkip)
    {
        // The text encoder's graph depends on CLIP skip; another value needs another load.
        if (_engine != null && _planClipSkip != clipSkip) ReleaseSessions();
        if (_engine == null)
        {
            var clip = clipSkip == 1 ? null : Model.TextEncoderGraph.ClipSkip(clipSkip);
            _plan = new PipelinePlan(Model, (component, readStored) =>
            {
                // Replaced weights first; LoRAs merge into them.
                var replaced = _options.Weights.GetValueOrDefault(component);
                Func<string, Tensor> read = replaced == null ? readStored : name => replaced.TryGetValue(name, out var t) ? t : readStored(name);
                var weights = _loras.MergedWeights(component, read);
                if (replaced != null)
                    foreach (var (name, t) in replaced) weights.TryAdd(name, t);
                return new NetworkEdits(weights, component == ModelFolder.TextEncoder ? clip : null);
            });
            _planClipSkip = clipSkip;
            if (!_engineAnnounced) _options.Log?.Invoke(EngineLine);
            _engineAnnounced = true;
            _engine = _makeEngine(_plan);
        }
        return _engine;
    }

    private GenerationResult Run(Job job, IPipelineEngine engine, IProgress<SamplingProgress>? progress, CancellationToken cancellation)
    {
        var r = job.Request;
        int b = r.BatchSize, total = b * r.BatchCount, c = Model.LatentChannels;
        int perImage = c * job.LatentHeight * job.LatentWidth;
        var finalLatents = new float[total * perImage];
        var images = new List<GeneratedImage>();
        Tensor? pixels = null;

        using var context = engine.EncodeText(ContextIds(job, b));
        using var unet = engine.OpenUNet(context, job.LatentHeight, job.LatentWidth);
        var denoiser = new GuidedDenoiser(unet, job.Guided, (float)r.CfgScale);

        for (int batch = 0; batch < r.BatchCount; batch++)
        {
            int first = batch * b;
            var seeds = Enumerable.Range(first, b).Select(i => r.Seed + i).ToArray();
            var scheduler = job.NewScheduler();
            scheduler.SetTimesteps(r.Steps);
            var (latents, timesteps) = StartLatents(job, engine, scheduler, seeds, first, perImage);
            var noise = r.StepNoise ?? new BatchNoise(seeds, RandomPurpose.SamplerNoise, firstStep: 1);
            progress?.Report(new SamplingProgress(0, timesteps.Count, first, b, total));
            denoiser.Run(scheduler, timesteps, latents, noise, k => progress?.Report(new SamplingProgress(k, timesteps.Count, first, b, total)), cancellation);
            latents.CopyTo(finalLatents, first * perImage);

            var decoded = LatentCodec.Decode(engine, latents, b, c, job.LatentHeight, job.LatentWidth, Model.LatentScale);
            pixels ??= Tensor.Zeros(DType.F32, total, decoded.Shape[1], decoded.Shape[2], 3);
            decoded.Data.Span.CopyTo(pixels.Data.Span[(int)(first * decoded.ByteLength / b)..]);
            var rgb = ImageTensors.FromTensor(decoded, PixelRange.ZeroToOne, PixelLayout.Hwc);
            for (int i = 0; i < b; i++) images.Add(new GeneratedImage(rgb[i], seeds[i], Parameters(job, seeds[i], scheduler)));
        }
        return new GenerationResult(images, Tensor.FromArray(finalLatents, total, c, job.LatentHeight, job.LatentWidth), pixels!, engine.Description, TimeSpan.Zero);
    }

    /// <summary>Token ids of the UNet's conditioning batch: B negative rows then B prompt rows (the prompt alone without guidance).</summary>
    private static Tensor ContextIds(Job job, int batch)
    {
        int len = job.PromptIds.Length;
        var rows = new List<int[]>();
        if (job.Guided) rows.AddRange(Enumerable.Repeat(job.NegativeIds, batch));
        rows.AddRange(Enumerable.Repeat(job.PromptIds, batch));
        return Tensor.FromArray(rows.SelectMany(x => x).ToArray(), rows.Count, len);
    }

    /// <summary>txt2img: seeded (or given) noise × init noise sigma over the whole schedule; img2img: the encoded image
    /// noised to the first timestep of the strength's tail of the schedule.</summary>
    private (float[] Latents, IReadOnlyList<double> Timesteps) StartLatents(Job job, IPipelineEngine engine, IScheduler scheduler, long[] seeds, int first, int perImage)
    {
        var r = job.Request;
        var start = new float[seeds.Length * perImage];
        if (job.InitImage == null)
        {
            if (r.InitialLatents is { } given) given.ToFloat32Array().AsSpan(first * perImage, start.Length).CopyTo(start);
            else new BatchNoise(seeds, RandomPurpose.SamplerNoise).Fill(start);
            float sigma = (float)scheduler.InitNoiseSigma;
            for (int i = 0; i < start.Length; i++) start[i] *= sigma;
            return (start, scheduler.Timesteps);
        }
        var tail = scheduler.GetImg2ImgTimesteps(r.Strength);
        var moments = engine.EncodeMoments(LatentCodec.Pixels(job.InitImage));
        var clean = LatentCodec.SampleLatents(moments, Model.LatentScale, new BatchNoise(seeds, RandomPurpose.LatentSample), copies: seeds.Length).ToFloat32Array();
        var noise = new float[start.Length];
        new BatchNoise(seeds, RandomPurpose.SamplerNoise).Fill(noise);
        scheduler.AddNoise(clean, noise, tail.Timesteps[0], start);
        return (start, tail.Timesteps);
    }

    private GenerationParameters Parameters(Job job, long seed, IScheduler scheduler)
    {
        var r = job.Request;
        var extra = new List<KeyValuePair<string, string>>();
        if (r.ClipSkip > 1) extra.Add(new("Clip skip", r.ClipSkip.ToString(CultureInfo.InvariantCulture)));
        if (r.InitImage != null) extra.Add(new("Denoising strength", r.Strength.ToString("R", CultureInfo.InvariantCulture)));
        if (_loras.Hashes is { } hashes) extra.Add(new("Lora hashes", hashes));
        extra.Add(new("Version", "CudaDream"));
        return new GenerationParameters
        {
            Prompt = r.Prompt,
            NegativePrompt = string.IsNullOrEmpty(r.NegativePrompt) ? null : r.NegativePrompt,
            Steps = r.Steps,
            Sampler = SamplerNames.Automatic1111(scheduler.Name),
            CfgScale = r.CfgScale,
            Seed = seed,
            Width = job.Width,
            Height = job.Height,
            Model = Model.Name,
            Extra = extra,
        };
    }
}

/// <summary>The names AUTOMATIC1111 gives the schedulers (its "Sampler" infotext field).</summary>
public static class SamplerNames
{
    public static string Automatic1111(string cliName) => cliName switch
    {
        "ddim" => "DDIM",
        "pndm" => "PLMS",
        "euler" => "Euler",
        "euler-a" => "Euler a",
        "lms" => "LMS",
        "heun" => "Heun",
        "dpmpp-2m-karras" => "DPM++ 2M Karras",
        "unipc" => "UniPC",
        "ddpm" => "DDPM",
        _ => cliName,
    };
}
