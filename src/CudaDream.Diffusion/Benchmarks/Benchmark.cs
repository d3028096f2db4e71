using System.Diagnostics;
using System.Runtime.InteropServices;
using CudaDream.Diffusion.Models;
using CudaDream.Diffusion.Sampling;
using CudaDream.Diffusion.Training;
using CudaDream.Engine;
using CudaDream.Engine.Backends;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Randomness;
using CudaDream.Engine.Tensors;
using CudaDream.Engine.Training;
using CudaDream.Engine.Training.Lora;
using CudaDream.Engine.Training.Optimizers;

namespace CudaDream.Diffusion.Benchmarks;

public sealed record BenchmarkOptions
{
    /// <summary>A diffusers ONNX model folder.</summary>
    public required string Model { get; init; }
    public int Batch { get; init; } = 1;
    public int Width { get; init; } = 128;
    public int Height { get; init; } = 128;
    /// <summary>Timed repetitions of each measurement (the median is reported).</summary>
    public int Repeats { get; init; } = 5;
    public int SampleSteps { get; init; } = 10;
    public SamplerEngine SampleEngine { get; init; } = SamplerEngine.Auto;
    /// <summary>Any of: kernels, forward, train, sample.</summary>
    public IReadOnlyList<string> What { get; init; } = new[] { "kernels", "forward", "train", "sample" };
    /// <summary>Where the training update runs: cpu (forward and backward only), or a kernel device (the trainer's whole update).</summary>
    public ExecutionBackend Backend { get; init; } = ExecutionBackend.Cpu;
    /// <summary>Mixed precision of a device training update: no, bf16, fp16.</summary>
    public string MixedPrecision { get; init; } = "no";
    /// <summary>Timed training updates on a kernel device (after one warm-up update that captures the graph).</summary>
    public int Updates { get; init; } = 5;
    /// <summary>After the timed runs, one more run of the forward and the step that times every op type (<see cref="OpTime"/>).</summary>
    public bool Profile { get; init; }
}

/// <summary>One op type's share of a profiled run: seconds, and the multiply-adds its nodes do (0 for memory-bound ops).</summary>
public sealed record OpTime(string Op, double Seconds, long MultiplyAdds)
{
    public double? GflopsPerSecond => MultiplyAdds > 0 && Seconds > 0 ? 2.0 * MultiplyAdds / Seconds / 1e9 : null;
}

/// <summary>
/// What one device-resident training update asked of the device, averaged over the timed updates, and the device memory:
/// the frozen and trained weights resident once, every executor's planned memory, the optimizer's buffers, the peak.
/// </summary>
public sealed record DeviceUpdateCounters(
    DeviceCounts PerUpdate, long BatchBytes, long ParameterUploads, long ResidentWeightBytes, long ExecutorBytes, long OptimizerBytes,
    long PeakDeviceBytes, bool GraphReplay)
{
    /// <summary>[G1]'s acceptance for the update, each with the numbers it compares.</summary>
    public IReadOnlyDictionary<string, string> Checks => new Dictionary<string, string>
    {
        ["host_syncs_per_update<=1"] = Verdict(PerUpdate.Synchronizations <= 1, $"{PerUpdate.Synchronizations}"),
        ["h2d_bytes<=batch+4KiB"] = Verdict(PerUpdate.HostToDeviceBytes <= BatchBytes + 4096, $"{PerUpdate.HostToDeviceBytes} vs {BatchBytes} + 4096"),
        ["d2h_bytes<=64"] = Verdict(PerUpdate.DeviceToHostBytes <= 64, $"{PerUpdate.DeviceToHostBytes}"),
        ["parameter_uploads==0"] = Verdict(ParameterUploads == 0, $"{ParameterUploads}"),
        ["peak<=weights+planned+10%"] = Verdict(PeakDeviceBytes <= 1.1 * (ResidentWeightBytes + ExecutorBytes + OptimizerBytes),
            $"{PeakDeviceBytes} vs 1.1 × ({ResidentWeightBytes} + {ExecutorBytes} + {OptimizerBytes})"),
        ["graph_replays_per_update==1"] = Verdict(PerUpdate.GraphReplays == 1, $"{PerUpdate.GraphReplays}"),
    };

    private static string Verdict(bool ok, string numbers) => (ok ? "pass: " : "FAIL: ") + numbers;
}

/// <summary>One measurement: what, its median time, and a rate or size where one applies.</summary>
public sealed record BenchmarkResult(string Name, double MedianSeconds, double? GflopsPerSecond, long? PlannedBytes, string Detail)
{
    /// <summary>A device training update's counters (null elsewhere).</summary>
    public DeviceUpdateCounters? Device { get; init; }
    /// <summary>Seconds per op type of one profiled run, slowest first (with <see cref="BenchmarkOptions.Profile"/>; null elsewhere).</summary>
    public IReadOnlyList<OpTime>? Profile { get; init; }
}

/// <param name="Backend">Where the training update ran, in words (a GPU's name, or that emu is no GPU measurement).</param>
public sealed record BenchmarkReport(string Machine, string Backend, IReadOnlyList<BenchmarkResult> Results);

/// <summary>
/// <c>cudadream bench</c>: speed and memory measured on this machine (DESIGN.md: benchmarks, never timed unit
/// tests). CPU kernels, a UNet forward, a LoRA training step (with and without checkpointing) and sampling,
/// each the median of several runs after one warm-up; FLOP rates use the graph's own multiply-add count.
/// </summary>
public static class Benchmark
{
    public static BenchmarkReport Run(BenchmarkOptions o, Action<string>? log = null)
    {
        var results = new List<BenchmarkResult>();
        void Add(BenchmarkResult r) { results.Add(r); log?.Invoke(Format(r)); }
        if (o.What.Contains("kernels")) foreach (var r in Kernels(o.Repeats)) Add(r);
        var model = ModelFolder.Open(o.Model);
        model.CheckImageSize(o.Width, o.Height);
        if (o.What.Contains("forward")) Add(Forward(o, model));
        if (o.What.Contains("train") && o.Backend.Kind != ExecutionBackend.BackendKind.Cpu) Add(DeviceTrainUpdate(o, model));
        else if (o.What.Contains("train"))
        {
            Add(TrainStep(o, model, checkpointing: false));
            Add(TrainStep(o, model, checkpointing: true));
        }
        if (o.What.Contains("sample")) Add(Sample(o, model));
        return new BenchmarkReport(Machine(), BackendLine(o.Backend, results), results);
    }

    public static string Format(BenchmarkResult r) =>
        $"{r.Name,-40} {r.MedianSeconds * 1000,10:F1} ms" + (r.GflopsPerSecond is double g ? $" {g,8:F1} GFLOP/s" : new string(' ', 17)) +
        (r.PlannedBytes is long b ? $" {b / (1024.0 * 1024),9:F1} MiB" : new string(' ', 14)) + $"  {r.Detail}" +
        (r.Profile is { } p ? string.Concat(FormatProfile(p).Select(l => "\n  " + l)) : "");

    /// <summary>The profile as lines: op, seconds, share of the run, rate; the ops under 1 % folded into one line.</summary>
    public static IEnumerable<string> FormatProfile(IReadOnlyList<OpTime> profile)
    {
        double total = profile.Sum(t => t.Seconds);
        if (total <= 0) yield break;
        var rest = profile.Where(t => t.Seconds < 0.01 * total).ToList();
        foreach (var t in profile.Except(rest))
            yield return $"{t.Op,-24} {t.Seconds * 1000,10:F1} ms {100 * t.Seconds / total,5:F1} %" + (t.GflopsPerSecond is double g ? $" {g,8:F1} GFLOP/s" : "");
        if (rest.Count > 0) yield return $"{$"{rest.Count} more op types",-24} {rest.Sum(t => t.Seconds) * 1000,10:F1} ms {100 * rest.Sum(t => t.Seconds) / total,5:F1} %";
    }

    /// <summary>One more run with per-op timing; multiply-adds summed per op type from the plan's own nodes.</summary>
    internal static IReadOnlyList<OpTime> ProfileRun(IPlanExecutor executor, Action run)
    {
        executor.Profile = true;
        try { run(); }
        finally { executor.Profile = false; }
        var macs = executor.Plan.Steps.GroupBy(n => n.Op).ToDictionary(g => g.Key, g => g.Sum(OpRegistry.MultiplyAdds));
        return executor.OpSeconds.Select(kv => new OpTime(kv.Key, kv.Value, macs.GetValueOrDefault(kv.Key))).OrderByDescending(t => t.Seconds).ToList();
    }

    /// <summary>CPU model, cores, OS and runtime; the GPU line says what was found.</summary>
    public static string Machine()
    {
        string cpu = RuntimeInformation.ProcessArchitecture.ToString();
        try
        {
            if (File.Exists("/proc/cpuinfo"))
                cpu = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':', 2)[1].Trim() ?? cpu;
        }
        catch (IOException) { }
        return $"{cpu}, {Environment.ProcessorCount} logical cores, CPU kernels {CudaDream.Engine.Backends.Cpu.Kernels.CpuSimd.Description}, {RuntimeInformation.OSDescription}, .NET {Environment.Version}";
    }

    private static string BackendLine(ExecutionBackend b, IReadOnlyList<BenchmarkResult> results) => b.Kind switch
    {
        ExecutionBackend.BackendKind.Cpu => "cpu (no GPU measurement)",
        ExecutionBackend.BackendKind.Emu => $"{b.Name}: the CUDA kernels on the CPU emulator (counts are the GPU's; times are not a GPU measurement)",
        _ => results.Select(r => r.Name).FirstOrDefault(n => n.Contains("cuda sm_", StringComparison.Ordinal)) is { } n ? n[(n.IndexOf("(cuda", StringComparison.Ordinal) + 1)..].TrimEnd(')') : b.Name,
    };

    internal static double Median(int repeats, Action run)
    {
        run(); // warm-up: JIT, first-touch of the arena
        var t = new List<double>();
        for (int i = 0; i < repeats; i++)
        {
            var sw = Stopwatch.StartNew();
            run();
            t.Add(sw.Elapsed.TotalSeconds);
        }
        t.Sort();
        return t[t.Count / 2];
    }

    private static float[] Random(int n, ulong seed)
    {
        var a = new float[n];
        CounterRng.FillNormal(a, seed, 0, RandomPurpose.Noise);
        return a;
    }

    /// <summary>Single-op graphs at SD 1.5 sizes through the CPU executor (<see cref="OpBenchmarks"/>).</summary>
    private static IEnumerable<BenchmarkResult> Kernels(int repeats) =>
        OpBenchmarks.Run(ExecutionBackend.Cpu, repeats).Select(t => new BenchmarkResult("kernel " + t.Name, t.MedianSeconds, t.GflopsPerSecond, null, t.Detail));

    internal static Dictionary<string, int[]> UNetShapes(BenchmarkOptions o, ModelFolder m)
    {
        var ehs = m.UNetGraph.Input("encoder_hidden_states")!.Dims;
        return new()
        {
            ["sample"] = new[] { o.Batch, m.LatentChannels, o.Height / m.VaeScaleFactor, o.Width / m.VaeScaleFactor },
            ["timestep"] = m.UNetGraph.Input("timestep")!.Dims.Length == 0 ? Array.Empty<int>() : new[] { o.Batch },
            ["encoder_hidden_states"] = new[] { o.Batch, 77, ehs[^1] },
        };
    }

    internal static Dictionary<string, Tensor> RandomInputs(Dictionary<string, int[]> shapes)
    {
        ulong seed = 10;
        return shapes.ToDictionary(kv => kv.Key, kv => kv.Key == "timestep"
            ? Tensor.FromArray(Enumerable.Repeat(500f, (int)Shapes.Numel(kv.Value)).ToArray(), kv.Value)
            : Tensor.FromArray(Random((int)Shapes.Numel(kv.Value), seed++), kv.Value));
    }

    internal static BenchmarkResult Forward(BenchmarkOptions o, ModelFolder m)
    {
        var shapes = UNetShapes(o, m);
        var compute = o.MixedPrecision == "no" ? DType.F32 : ParseDType.Compute(o.MixedPrecision);
        using var s = GraphSession.Create(m.ModelPath(ModelFolder.UNet), shapes, new GraphSessionOptions { Backend = o.Backend, Compute = compute });
        long flops = 2 * s.Graph.Nodes.Sum(OpRegistry.MultiplyAdds);
        var inputs = RandomInputs(shapes);
        double t = Median(o.Repeats, () => s.Run(inputs));
        return new BenchmarkResult($"unet forward b{o.Batch} {o.Width}x{o.Height} {ParseDType.Name(compute)} ({s.BackendName})", t, flops / t / 1e9, s.Plan.ArenaBytes,
            $"{flops / 1e9:F2} GFLOP per forward (inputs uploaded and the output read back in each timed run)")
        { Profile = o.Profile ? ProfileRun(s.Executor, () => s.Run(inputs)) : null };
    }

    internal static BenchmarkResult TrainStep(BenchmarkOptions o, ModelFolder m, bool checkpointing)
    {
        var shapes = UNetShapes(o, m);
        var g = OnnxImporter.Load(m.ModelPath(ModelFolder.UNet));
        GraphPasses.Prepare(g, shapes, fuse: true);
        long forwardFlops = 2 * g.Nodes.Sum(OpRegistry.MultiplyAdds);
        var targets = LoraTargetSelector.Select(GraphLora.Targets(g, LoraComponents.UNet), new[] { "attention" });
        var attached = GraphLora.Attach(g, GraphLora.Initialize(targets, 4, 4, 1));
        var tg = TrainingGraph.Build(g, attached.SelectMany(a => new[] { a.Down, a.Up }).ToList(), new TrainingGraphOptions { GradientCheckpointing = checkpointing });
        using var session = new TrainingSession(tg);
        long flops = 2 * g.Nodes.Sum(OpRegistry.MultiplyAdds);
        var inputs = RandomInputs(shapes);
        inputs[TrainingGraph.TargetInput] = Tensor.FromArray(Random((int)Shapes.Numel(shapes["sample"]), 20), shapes["sample"]);
        double t = Median(o.Repeats, () => session.Run(inputs));
        return new BenchmarkResult($"lora train step b{o.Batch} {o.Width}x{o.Height}{(checkpointing ? " ckpt" : "")}", t, flops / t / 1e9, session.Plan.ArenaBytes,
            $"rank-4 attention LoRA, {flops / 1e9:F2} GFLOP per step ({(double)flops / forwardFlops:F2}× the forward)")
        { Profile = o.Profile ? ProfileRun(session.Executor, () => session.Run(inputs)) : null };
    }

    /// <summary>
    /// The trainer's whole update on a kernel device, as <c>train</c> runs it (rank-4 LoRA on the attention projections,
    /// AdamW, clipping at 1): one warm-up update (kernel loads, graph capture), then <see cref="BenchmarkOptions.Updates"/>
    /// timed ones on fresh random batches, each ending with the report read; the device's counters per update beside the time.
    /// </summary>
    private static BenchmarkResult DeviceTrainUpdate(BenchmarkOptions o, ModelFolder m)
    {
        var options = new DreamBoothOptions
        {
            Model = m.Root, LoraRank = 4, LoraTargets = ["attention"], MixedPrecision = o.MixedPrecision, MaxGradNorm = 1.0, Seed = 1,
        };
        int lh = o.Height / m.VaeScaleFactor, lw = o.Width / m.VaeScaleFactor;
        using var nets = TrainingNetworks.Build(options, m, o.Backend, o.Batch, lh, lw, _ => { });
        var optimizer = new AdamW([new ParameterGroup("unet", nets.OptimizerParameters("unet"), 1e-4, 1e-2)]);
        var line = nets.UseDeviceUpdate(optimizer, _ => { });
        if (!nets.DeviceResident) throw new CudaDreamException(line);
        var device = nets.Device!;
        var shapes = UNetShapes(o, m);
        TrainingBatch Batch(ulong seed)
        {
            var inputs = shapes.ToDictionary(kv => kv.Key, kv => kv.Key == "timestep"
                ? Tensor.FromArray(Enumerable.Repeat(500f, (int)Shapes.Numel(kv.Value)).ToArray(), kv.Value)
                : Tensor.FromArray(Random((int)Shapes.Numel(kv.Value), seed++), kv.Value));
            inputs[TrainingGraph.TargetInput] = Tensor.FromArray(Random((int)Shapes.Numel(shapes["sample"]), seed), shapes["sample"]);
            inputs[TrainingGraph.WeightsInput] = Tensor.FromArray(Enumerable.Repeat(1f, o.Batch).ToArray(), o.Batch);
            return new TrainingBatch(inputs, Tensor.FromArray(new long[o.Batch * 77], o.Batch, 77), Enumerable.Repeat(1f, o.Batch).ToArray());
        }
        long batchBytes = Batch(0).UNet.Values.Sum(t => t.ByteLength);
        nets.DeviceStep([Batch(100)], 1, 0, false); // warm-up: kernels load, the graph is captured
        var before = device.Counters.Counts;
        long uploads = nets.Context!.ParameterUploads;
        var times = new List<double>();
        for (int u = 0; u < o.Updates; u++)
        {
            var batch = Batch(200 + (ulong)u * 10); // made before the clock starts: the data loader's work, not the update's
            var sw = Stopwatch.StartNew();
            nets.DeviceStep([batch], 1, u + 1, false);
            times.Add(sw.Elapsed.TotalSeconds);
        }
        var per = (device.Counters.Counts - before).Per(o.Updates);
        times.Sort();
        double t = times[times.Count / 2];
        long executors = nets.ExecutorDeviceBytes;
        var counters = new DeviceUpdateCounters(per, batchBytes, nets.Context.ParameterUploads - uploads, nets.Context.ResidentBytes, executors,
            nets.OptimizerDeviceBytes, device.Counters.PeakAllocatedBytes, per.GraphReplays > 0);
        return new BenchmarkResult($"train update b{o.Batch} {o.Width}x{o.Height} {o.MixedPrecision} ({device.Name})", t, null, executors,
            $"rank-4 attention LoRA, AdamW; per update {per.Launches} kernels, {per.Gemms} GEMMs, {per.GraphReplays} replay(s), {per.Synchronizations} sync(s), " +
            $"H2D {per.HostToDeviceBytes} B (batch {batchBytes} B), D2H {per.DeviceToHostBytes} B; device peak {device.Counters.PeakAllocatedBytes / (1024.0 * 1024):F1} MiB") { Device = counters };
    }

    internal static BenchmarkResult Sample(BenchmarkOptions o, ModelFolder m)
    {
        using var sampler = Sampler.Create(m, new SamplerOptions { Engine = o.SampleEngine, KeepSessionsLoaded = true });
        var request = new GenerationRequest { Prompt = "a photo of a cat", Steps = o.SampleSteps, Width = o.Width, Height = o.Height, Scheduler = "euler-a", Seed = 1 };
        double t = Median(Math.Max(1, o.Repeats / 2), () => sampler.Generate(request));
        return new BenchmarkResult($"sample {o.Width}x{o.Height} {o.SampleSteps} steps", t, null, null, sampler.EngineLine.Replace("engine: ", ""));
    }
}
