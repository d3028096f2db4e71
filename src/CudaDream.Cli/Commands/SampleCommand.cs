using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using CommandLine;
using CudaDream.Diffusion.Images;
using CudaDream.Diffusion.Sampling;
using CudaDream.Diffusion.Schedulers;
using CudaDream.Engine;
using CudaDream.Engine.Formats;
using CudaDream.Engine.Tensors;
using Spectre.Console;

namespace CudaDream.Cli.Commands;

[Verb("sample", HelpText = "Generate images from a diffusers ONNX model folder (txt2img, or img2img with --init-image), with LoRAs merged in memory.")]
public sealed class SampleCommand : ICommand
{
    [Option("model", Required = true, HelpText = "Diffusers ONNX model folder (model_index.json, tokenizer/, scheduler/, text_encoder/, unet/, vae_decoder/, vae_encoder/).")]
    public string Model { get; set; } = "";

    [Option("prompt", Required = true, HelpText = "The prompt.")]
    public string Prompt { get; set; } = "";

    [Option("negative", Default = "", HelpText = "Negative prompt (the unconditional half of classifier-free guidance).")]
    public string Negative { get; set; } = "";

    [Option("steps", Default = 25, HelpText = "Denoising steps.")]
    public int Steps { get; set; } = 25;

    [Option("cfg", Default = 7.5, HelpText = "Classifier-free guidance scale (1 or less: no guidance).")]
    public double Cfg { get; set; } = 7.5;

    [Option("scheduler", HelpText = "ddim, pndm, euler, euler-a, lms, heun, dpmpp-2m-karras, unipc or ddpm; default: the model's scheduler_config.json.")]
    public string? Scheduler { get; set; }

    [Option("seed", HelpText = "Seed of the first image (image i uses seed + i); default or -1: random.")]
    public long? Seed { get; set; }

    [Option("width", HelpText = "Image width; default: the model's size (or the --latents' size).")]
    public int? Width { get; set; }

    [Option("height", HelpText = "Image height; default: the model's size (or the --latents' size).")]
    public int? Height { get; set; }

    [Option("batch-size", Default = 1, HelpText = "Images generated together.")]
    public int BatchSize { get; set; } = 1;

    [Option("batch-count", Default = 1, HelpText = "Batches generated one after another.")]
    public int BatchCount { get; set; } = 1;

    [Option("lora", HelpText = "LoRA file, FILE or FILE:multiplier (default 1); repeat the option for several.")]
    public IEnumerable<string> Loras { get; set; } = [];

    [Option("clip-skip", Default = 1, HelpText = "2 = the text encoder's penultimate layer, final-layer-normed (AUTOMATIC1111's Clip skip).")]
    public int ClipSkip { get; set; } = 1;

    [Option("init-image", HelpText = "img2img: start from this image (resized to cover the size, centre-cropped).")]
    public string? InitImage { get; set; }

    [Option("strength", HelpText = "img2img: how much of the schedule to run over the image (0..1]; default 0.6.")]
    public double? Strength { get; set; }

    [Option("latents", HelpText = ".safetensors with 'initial_latents' [N,C,H/8,W/8] to start from (multiplied by the scheduler's init noise sigma).")]
    public string? Latents { get; set; }

    [Option("engine", Default = "auto", HelpText = "auto (ONNX Runtime CUDA, else CudaDream CUDA, else ONNX Runtime CPU), ort or cudadream.")]
    public string Engine { get; set; } = "auto";

    [Option("backend", HelpText = "Where CudaDream's engine runs: cpu, emu (checking only: slow), cuda[:N]. Default: CUDA when a GPU opens, else the CPU.")]
    public string? Backend { get; set; }

    [Option("dtype", Default = "fp32", HelpText = "CudaDream's engine on a GPU: fp32, bf16 or fp16 activations and weights (norms and softmax stay fp32).")]
    public string DType { get; set; } = "fp32";

    [Option("threads", Default = 0, HelpText = "ONNX Runtime CPU threads (0: its default).")]
    public int Threads { get; set; }

    [Option("grid", HelpText = "Also write a grid of all images (one row per batch).")]
    public bool Grid { get; set; }

    [Option("out-tensors", HelpText = "Also write 'final_latents' and 'image' (float, NHWC, 0..1) to this .safetensors file.")]
    public string? OutTensors { get; set; }

    [Option("out", Required = true, HelpText = "Output folder for the PNG files (created if needed).")]
    public string Out { get; set; } = "";

    [Option("force", HelpText = "Replace an existing --out-tensors file.")]
    public bool Force { get; set; }

    [Option("json", HelpText = "Print the result as JSON.")]
    public bool Json { get; set; }

    public int Run()
    {
        if (File.Exists(Out)) throw new CudaDreamException($"--out {Out}: is a file; give a folder");
        if (OutTensors != null && Directory.Exists(OutTensors)) throw new CudaDreamException($"--out-tensors {OutTensors}: is a folder; give a .safetensors file");
        // Leaving a size out means the model's size; an explicit 0 or negative size is a mistake, not "default".
        if (Width is <= 0) throw new CudaDreamException($"--width {Width}: must be a positive multiple of 8 (leave it out for the model's size)");
        if (Height is <= 0) throw new CudaDreamException($"--height {Height}: must be a positive multiple of 8 (leave it out for the model's size)");
        if (Threads < 0) throw new CudaDreamException($"--threads {Threads}: must be 0 (ONNX Runtime's default) or more");
        if (OutTensors != null)
            OutputGuard.Check("--out-tensors", OutTensors, Force,
                [("--latents", Latents), ("--init-image", InitImage), ("--model", Model), .. Loras.Select(l => ("--lora", (string?)Diffusion.Models.Export.LoraSpec.Parse(l).Path))]);
        if (Strength != null && InitImage == null) throw new CudaDreamException("--strength applies to img2img only; give --init-image too");
        var engine = EngineSelection.Parse(Engine);
        var backend = Backend == null ? null : Backends.Require(Backend);
        var compute = ParseDType.Compute(DType);
        if (compute != CudaDream.Engine.Tensors.DType.F32 && backend?.Kind == ExecutionBackend.BackendKind.Cpu)
            throw new CudaDreamException($"--dtype {DType}: the cpu backend computes in fp32 (the reference); use --backend emu or cuda");
        if (Scheduler != null && !SchedulerFactory.Names.Contains(Scheduler.ToLowerInvariant()))
            throw new CudaDreamException($"--scheduler {Scheduler}: choose one of {string.Join(", ", SchedulerFactory.Names)}");
        var request = new GenerationRequest
        {
            Prompt = Prompt,
            NegativePrompt = Negative,
            Steps = Steps,
            CfgScale = Cfg,
            Scheduler = Scheduler?.ToLowerInvariant(),
            Seed = Seed is null or -1 ? Random.Shared.NextInt64(0, 1L << 32) : Seed.Value,
            Width = Width ?? 0,
            Height = Height ?? 0,
            BatchSize = BatchSize,
            BatchCount = BatchCount,
            ClipSkip = ClipSkip,
            Strength = Strength ?? 0.6,
            InitImage = InitImage == null ? null : ImageLoader.Load(InitImage),
            InitialLatents = Latents == null ? null : ReadLatents(Latents),
        };
        var options = new SamplerOptions
        {
            Engine = engine,
            Loras = Loras.Select(LoraSource.Parse).ToList(),
            Threads = Threads,
            Backend = backend,
            Compute = compute,
            Log = line => Console.Error.WriteLine(line),
        };

        var watch = Stopwatch.StartNew();
        // Listening before the model loads: a signal during the load (which prints the engine line) stops the run as one later does.
        using var interrupt = new CliInterrupt("stopping (no images of this run are written; Ctrl-C again to abort)...");
        using var sampler = Sampler.Create(Model, options);
        var result = Generate(sampler, request, interrupt.Token);
        var written = Write(result, request);
        double seconds = watch.Elapsed.TotalSeconds;
        double perImage = result.Elapsed.TotalSeconds / result.Images.Count;
        if (Json)
            Console.WriteLine(JsonSerializer.Serialize(new
            {
                model = Model,
                engine = result.Engine,
                images = written.Images.Select((p, i) => new { path = p, seed = result.Images[i].Seed }),
                grid = written.Grid,
                out_tensors = OutTensors,
                seconds,
                seconds_per_image = perImage,
            }));
        else
            Console.WriteLine($"wrote {written.Images.Count} image{(written.Images.Count == 1 ? "" : "s")} to {Out}{(written.Grid != null ? $" (+ {Path.GetFileName(written.Grid)})" : "")}, seed {request.Seed}, {perImage:F2} s per image ({result.Engine})");
        return 0;
    }

    private static Tensor ReadLatents(string path)
    {
        using var file = SafetensorsFile.Open(path);
        if (!file.Contains("initial_latents"))
            throw new InvalidFileException(path, $"no tensor 'initial_latents' (the file has {string.Join(", ", file.Names.Take(8))}{(file.Names.Count() > 8 ? ", …" : "")})");
        return file.Get("initial_latents").Clone();
    }

    /// <summary>A bar per batch on an interactive terminal; one line per batch otherwise.</summary>
    private static GenerationResult Generate(Sampler sampler, GenerationRequest request, CancellationToken cancellation)
    {
        string Label(SamplingProgress p) => p.BatchSize == 1 ? $"image {p.ImageIndex + 1}/{p.ImageCount}" : $"images {p.ImageIndex + 1}-{p.ImageIndex + p.BatchSize}/{p.ImageCount}";
        if (Console.IsErrorRedirected)
        {
            var reporter = new Reporter(p =>
            {
                if (p.Step == p.TotalSteps) Console.Error.WriteLine($"{Label(p)}: {p.TotalSteps} steps done");
            });
            return sampler.Generate(request, reporter, cancellation);
        }
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
        GenerationResult? result = null;
        console.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new RemainingTimeColumn())
            .Start(ctx =>
            {
                var tasks = new Dictionary<int, ProgressTask>();
                result = sampler.Generate(request, new Reporter(p =>
                {
                    if (!tasks.TryGetValue(p.ImageIndex, out var task))
                        tasks[p.ImageIndex] = task = ctx.AddTask(Label(p), maxValue: p.TotalSteps);
                    task.Value = p.Step;
                }), cancellation);
            });
        return result!;
    }

    private sealed class Reporter(Action<SamplingProgress> report) : IProgress<SamplingProgress>
    {
        public void Report(SamplingProgress value) => report(value);
    }

    private (List<string> Images, string? Grid) Write(GenerationResult result, GenerationRequest request)
    {
        Directory.CreateDirectory(Out);
        int next = NextIndex(Out);
        var paths = new List<string>();
        foreach (var image in result.Images)
        {
            var path = Path.Combine(Out, $"{next++:D5}-{image.Seed}.png");
            PngFile.Write(path, image.Image, image.Parameters);
            paths.Add(path);
        }
        string? grid = null;
        if (Grid && result.Images.Count > 1)
        {
            grid = Path.Combine(Out, $"grid-{next - result.Images.Count:D5}.png");
            var composed = ImageGrid.Compose(result.Images.Select(i => i.Image).ToList(), request.BatchSize);
            PngFile.Write(grid, composed, result.Images[0].Parameters);
        }
        if (OutTensors != null)
            SafetensorsWriter.Write(OutTensors, new Dictionary<string, Tensor> { ["final_latents"] = result.FinalLatents, ["image"] = result.Pixels });
        return (paths, grid);
    }

    private static readonly Regex Numbered = new(@"^(\d{5,})-", RegexOptions.CultureInvariant);

    /// <summary>One past the highest number already used in the folder (AUTOMATIC1111 numbers its outputs the same way).</summary>
    private static int NextIndex(string dir) =>
        Directory.EnumerateFiles(dir, "*.png").Select(f => Numbered.Match(Path.GetFileName(f)))
            .Where(m => m.Success && int.TryParse(m.Groups[1].Value, NumberStyles.None, CultureInfo.InvariantCulture, out _))
            .Select(m => int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture) + 1).DefaultIfEmpty(0).Max();
}
