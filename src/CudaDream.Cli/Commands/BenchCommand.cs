using System.Text.Json;
using CommandLine;
using CudaDream.Diffusion.Benchmarks;
using CudaDream.Diffusion.Models;
using CudaDream.Diffusion.Sampling;
using CudaDream.Engine;

namespace CudaDream.Cli.Commands;

[Verb("bench", HelpText = "Measure speed and memory on this machine: CPU kernels, UNet forward, LoRA training step, sampling.")]
public sealed class BenchCommand : ICommand
{
    [Option("model", HelpText = "Model folder (default: the embedded tiny model, artifacts/models/tiny-sd).")]
    public string? Model { get; set; }

    [Option("batch", Default = "1", HelpText = "Batch size, or a comma list (1,4): each is measured.")]
    public string Batch { get; set; } = "1";

    [Option("sd15", HelpText = "Bench the SD 1.5 architecture with seeded random weights (built once into artifacts/models/sd15-random-seed1, ~2 GB) instead of a model folder.")]
    public bool Sd15 { get; set; }

    [Option("size", Default = "128", HelpText = "Image size: N or WxH (latents are 1/8).")]
    public string Size { get; set; } = "128";

    [Option("repeats", Default = 5, HelpText = "Timed runs per measurement (the median is reported).")]
    public int Repeats { get; set; } = 5;

    [Option("what", Default = "kernels,forward,train,sample", HelpText = "Comma list of: kernels, forward, train, sample.")]
    public string What { get; set; } = "kernels,forward,train,sample";

    [Option("steps", Default = 10, HelpText = "Sampling steps for the sample measurement.")]
    public int Steps { get; set; } = 10;

    [Option("engine", Default = "auto", HelpText = "Sampling engine: auto, ort, cudadream.")]
    public string Engine { get; set; } = "auto";

    [Option("backend", Default = "cpu", HelpText = "Where the training update runs: cpu (forward and backward), emu or cuda[:N] (the trainer's whole device-resident update, with the device's counters).")]
    public string Backend { get; set; } = "cpu";

    [Option("dtype", Default = "fp32", HelpText = "Compute type of a device training update: fp32, bf16, fp16 (mixed precision, fp32 masters).")]
    public string DType { get; set; } = "fp32";

    [Option("updates", Default = 5, HelpText = "Timed training updates on a device backend (after one warm-up that captures the graph).")]
    public int Updates { get; set; } = 5;

    [Option("compare", HelpText = "Time the same UNet forward, LoRA step and sampling in CudaDream, ONNX Runtime and PyTorch (libtorch via ./build.sh bench-compare); writes compare.json and compare.png into --out.")]
    public bool Compare { get; set; }

    [Option("out", HelpText = "Folder for --compare's compare.json and compare.png (default: artifacts/bench).")]
    public string? Out { get; set; }

    [Option("profile", HelpText = "After the timed runs, one more forward and training step timing every op type (CPU; a device synchronises after each op): where the time goes.")]
    public bool Profile { get; set; }

    [Option("json", HelpText = "Print JSON.")]
    public bool Json { get; set; }

    public int Run()
    {
        var backend = Backends.Require(Backend);
        var dtype = ParseDType.Compute(DType);
        if (Sd15 && Model != null) throw new CudaDreamException("--sd15 and --model exclude each other");
        var batches = Batch.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(b => int.TryParse(b, out var n) && n >= 1 ? n : throw new CudaDreamException($"--batch '{Batch}' is not a positive number or a comma list of them")).ToList();
        var models = Path.Combine(AppContext.BaseDirectory, "..", "models");
        var model = Model ?? (Sd15 ? RandomWeights.Sd15Folder(models, progress: Json ? null : Console.WriteLine) : Path.Combine(models, "tiny-sd"));
        if (!Directory.Exists(model)) throw new CudaDreamException($"model folder '{model}' not found (give --model, or run ./build.sh to import the tiny model)");
        var parts = Size.ToLowerInvariant().Split('x');
        if (!int.TryParse(parts[0], out int w) || !int.TryParse(parts[^1], out int h) || w <= 0 || h <= 0) throw new CudaDreamException($"--size '{Size}' is not N or WxH");
        if (batches.Count == 0 || Repeats < 1 || Steps < 1 || Updates < 1) throw new CudaDreamException("--batch, --repeats, --steps and --updates must be at least 1");
        if (backend.Kind == ExecutionBackend.BackendKind.Cpu && dtype != CudaDream.Engine.Tensors.DType.F32) throw new CudaDreamException($"--dtype {DType}: the cpu backend computes in fp32 (the reference); use --backend emu or cuda");
        var what = What.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        foreach (var x in what) if (x is not ("kernels" or "forward" or "train" or "sample")) throw new CudaDreamException($"--what: unknown measurement '{x}'");
        var options = new BenchmarkOptions
        {
            Model = model, Batch = batches[0], Width = w, Height = h, Repeats = Repeats, SampleSteps = Steps,
            SampleEngine = EngineSelection.Parse(Engine), What = what, Backend = backend, Updates = Updates, Profile = Profile,
            MixedPrecision = dtype == CudaDream.Engine.Tensors.DType.F32 ? "no" : ParseDType.Name(dtype),
        };
        if (!Json) Console.WriteLine($"machine: {Benchmark.Machine()}");
        if (Compare) return RunComparison(options, batches);
        var report = Benchmark.Run(options, Json ? null : Console.WriteLine);
        // Further batch sizes: the same measurements but the per-kernel ones (they do not depend on the batch).
        foreach (var b in batches.Skip(1))
        {
            var more = Benchmark.Run(options with { Batch = b, What = what.Where(x => x != "kernels").ToList() }, Json ? null : Console.WriteLine);
            report = report with { Results = report.Results.Concat(more.Results).ToList() };
        }
        if (!Json)
        {
            Console.WriteLine($"backend: {report.Backend}");
            foreach (var r in report.Results.Where(r => r.Device != null))
                foreach (var (check, verdict) in r.Device!.Checks) Console.WriteLine($"  {check}: {verdict}");
        }
        if (Json) Console.WriteLine(JsonSerializer.Serialize(report, new JsonSerializerOptions
        {
            WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        }));
        return 0;
    }

    private int RunComparison(BenchmarkOptions options, IReadOnlyList<int> batches)
    {
        var bin = AppContext.BaseDirectory;
        string torchBench = Path.GetFullPath(Path.Combine(bin, "..", "torchbench", "cudadream-torchbench.dll"));
        string folder = Out ?? Path.GetFullPath(Path.Combine(bin, "..", "bench"));
        if (!Json) Console.WriteLine(BenchmarkComparison.Header);
        var rows = new List<ComparisonRow>();
        ComparisonReport? report = null;
        foreach (var b in batches)
        {
            report = BenchmarkComparison.Run(options with { Batch = b }, torchBench, Json ? null : Console.WriteLine);
            rows.AddRange(report.Rows);
        }
        report = report! with { Rows = rows };
        BenchmarkComparison.Write(report, folder);
        if (Json) Console.WriteLine(File.ReadAllText(Path.Combine(folder, "compare.json")));
        else Console.WriteLine($"versions: {string.Join(", ", report.Versions.Select(kv => $"{kv.Key} {kv.Value}"))}; wrote {Path.Combine(folder, "compare.json")} and compare.png");
        return 0;
    }
}
