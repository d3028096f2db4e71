using CudaDream.Diffusion.Images;
using CudaDream.Diffusion.Tokenizers;
using CudaDream.Engine;
using CudaDream.Engine.Backends.Device;
using CudaDream.Engine.Randomness;
using CudaDream.Engine.Tensors;

namespace CudaDream.Diffusion.Sampling;

/// <summary>Which engine runs the networks (<c>--engine</c>).</summary>
public enum SamplerEngine
{
    /// <summary>ONNX Runtime with CUDA when it loads, else CudaDream on CUDA when a GPU opens, else ONNX Runtime on the CPU.</summary>
    Auto,
    /// <summary>ONNX Runtime: CUDA execution provider when it loads, else the CPU one.</summary>
    Ort,
    /// <summary>CudaDream's own engine: on <see cref="SamplerOptions.Backend"/>, else on CUDA when a GPU opens, else on the CPU.</summary>
    CudaDream,
}

/// <summary>How a <see cref="Sampler"/> loads a model: engine, LoRAs, tokenizer behaviour.</summary>
public sealed record SamplerOptions
{
    public SamplerEngine Engine { get; init; } = SamplerEngine.Auto;
    /// <summary>LoRAs merged into the weights in memory (no re-export), each with its multiplier.</summary>
    public IReadOnlyList<LoraSource> Loras { get; init; } = [];
    /// <summary>Weights that replace the model's before LoRAs merge (e.g. a selected-layer training run's tuned tensors):
    /// network (<c>unet</c>, <c>text_encoder</c>) → initializer name → tensor in the initializer's shape and element type.</summary>
    public IReadOnlyDictionary<string, IReadOnlyDictionary<string, Tensor>> Weights { get; init; } = new Dictionary<string, IReadOnlyDictionary<string, Tensor>>();
    public TextCleaning TextCleaning { get; init; } = TextCleaning.FixText;
    /// <summary>CUDA device for ONNX Runtime's CUDA execution provider.</summary>
    public int CudaDevice { get; init; }
    /// <summary>Where CudaDream's engine runs (cpu, emu, cuda[:N]); null = CUDA when a GPU opens, else the CPU.</summary>
    public ExecutionBackend? Backend { get; init; }
    /// <summary>CudaDream's engine on a kernel device: fp32, or bf16/fp16 activations and weights (norms and softmax in fp32).</summary>
    public DType Compute { get; init; } = DType.F32;
    /// <summary>CudaDream's engine on a kernel device: a context to share (a training run's, its weights resident once).</summary>
    public DeviceContext? Context { get; init; }
    /// <summary>ONNX Runtime intra-op threads on the CPU; 0 = its default.</summary>
    public int Threads { get; init; }
    /// <summary>Keep sessions loaded after <see cref="Sampler.Generate"/> returns (the CLI's several calls); by default
    /// every round releases them so that a trainer gets the memory back.</summary>
    public bool KeepSessionsLoaded { get; init; }
    /// <summary>One-line notices: which engine was chosen, LoRA warnings, prompt truncation.</summary>
    public Action<string>? Log { get; init; }
}

/// <summary>What to generate. Sizes of 0 mean: from <see cref="InitialLatents"/> when given, else the model's default.</summary>
public sealed record GenerationRequest
{
    public required string Prompt { get; init; }
    public string NegativePrompt { get; init; } = "";
    public int Steps { get; init; } = 25;
    /// <summary>Classifier-free guidance scale (Ho &amp; Salimans 2022, eq. 6 with w = scale − 1); ≤ 1 runs the prompt alone, as diffusers does.</summary>
    public double CfgScale { get; init; } = 7.5;
    /// <summary>CLI scheduler name (<see cref="Schedulers.SchedulerFactory.Names"/>); null = the one the model's scheduler_config.json names.</summary>
    public string? Scheduler { get; init; }
    /// <summary>Image i of the request uses seed Seed + i (as AUTOMATIC1111 numbers a batch).</summary>
    public long Seed { get; init; }
    public int Width { get; init; }
    public int Height { get; init; }
    public int BatchSize { get; init; } = 1;
    public int BatchCount { get; init; } = 1;
    /// <summary>1 = the last layer; 2 = the penultimate layer, final-layer-normed (AUTOMATIC1111's "Clip skip").</summary>
    public int ClipSkip { get; init; } = 1;
    /// <summary>img2img: the start image (resized to cover Width×Height and centre-cropped).</summary>
    public RgbImage? InitImage { get; init; }
    /// <summary>img2img: how far back into the noise schedule the image is taken (0..1].</summary>
    public double Strength { get; init; } = 0.6;
    /// <summary>Start latents [BatchSize·BatchCount, C, H/8, W/8] instead of seeded noise; multiplied by the scheduler's init noise sigma, as diffusers does.</summary>
    public Tensor? InitialLatents { get; init; }
    /// <summary>The noise stochastic schedulers (Euler a, DDPM) draw per step, instead of the seeded stream (e.g. a recorded <see cref="RecordedNoise"/>).</summary>
    public INoiseSource? StepNoise { get; init; }
}

/// <summary>Progress of a round: <paramref name="Step"/> of <paramref name="TotalSteps"/> done for the images
/// <paramref name="ImageIndex"/> … <paramref name="ImageIndex"/> + <paramref name="BatchSize"/> − 1 of <paramref name="ImageCount"/>.</summary>
public readonly record struct SamplingProgress(int Step, int TotalSteps, int ImageIndex, int BatchSize, int ImageCount);

/// <summary>One image with how it was made.</summary>
public sealed record GeneratedImage(RgbImage Image, long Seed, GenerationParameters Parameters);

/// <param name="FinalLatents">The denoised latents [N, C, h, w] (before the VAE scaling).</param>
/// <param name="Pixels">The decoded images, F32 [N, H, W, 3] in 0..1 (diffusers' output_type="np").</param>
public sealed record GenerationResult(IReadOnlyList<GeneratedImage> Images, Tensor FinalLatents, Tensor Pixels, string Engine, TimeSpan Elapsed);
