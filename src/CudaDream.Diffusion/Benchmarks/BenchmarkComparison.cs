using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using CudaDream.Diffusion.Images;
using CudaDream.Diffusion.Models;
using CudaDream.Diffusion.Sampling;
using CudaDream.Engine;
using CudaDream.Engine.Backends.Cpu.Kernels;
using CudaDream.Engine.Formats;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Tensors;
using Microsoft.ML.OnnxRuntime;
using ScottPlot;
using Tensor = CudaDream.Engine.Tensors.Tensor;

namespace CudaDream.Diffusion.Benchmarks;

/// <summary>One library's time for one measurement; <see cref="MedianSeconds"/> is null where it was not measured, with the reason in <see cref="Note"/>.</summary>
public sealed record ComparisonRow(string Measurement, string Library, double? MedianSeconds, double? GflopsPerSecond, long? PeakRssBytes, string Note)
{
    /// <summary>This time over CudaDream's for the same measurement (1 for CudaDream itself).</summary>
    public double? RatioToCudaDream { get; init; }
}

public sealed record ComparisonReport(string Machine, int Threads, IReadOnlyDictionary<string, string> Versions, IReadOnlyList<ComparisonRow> Rows);

/// <summary>
/// <c>cudadream bench --compare</c>: the same work, weights and shapes timed in CudaDream, in ONNX Runtime (in process, on
/// the folder's own ONNX graphs) and in PyTorch (libtorch through the bench-only <c>cudadream-torchbench</c>, run as a
/// child process after it has proved its UNet against the fixture's PyTorch reference). Every library gets the same
/// thread count. Peak RSS is the process's high-water mark over that library's runs (Linux resets it per library
/// through <c>/proc/self/clear_refs</c>; elsewhere the column is empty for the in-process libraries).
/// </summary>
public static class BenchmarkComparison
{
    public const string CudaDreamName = "CudaDream";
    public const string OrtName = "ONNX Runtime";
    public const string TorchName = "PyTorch";

    /// <param name="torchBench">Path of cudadream-torchbench.dll; null or missing: the PyTorch rows say how to build it.</param>
    public static ComparisonReport Run(BenchmarkOptions o, string? torchBench, Action<string>? log = null)
    {
        var model = ModelFolder.Open(o.Model);
        model.CheckImageSize(o.Width, o.Height);
        int threads = CpuKernelOptions.MaxDegreeOfParallelism;
        var rows = new List<ComparisonRow>();
        void Add(ComparisonRow r)
        {
            // CudaDream's row comes first in every measurement: the ratio is known as each row is printed.
            var baseline = rows.FirstOrDefault(x => x.Measurement == r.Measurement && x.Library == CudaDreamName)?.MedianSeconds ?? r.MedianSeconds;
            if (r.MedianSeconds is double s && baseline is double b && b > 0) r = r with { RatioToCudaDream = s / b };
            rows.Add(r);
            log?.Invoke(FormatRow(r));
        }
        string size = $"b{o.Batch} {o.Width}x{o.Height}";
        string forward = $"unet forward {size}", train = $"lora train step {size}", sample = $"sample {o.Width}x{o.Height} {o.SampleSteps} steps";

        // Each measurement's own peak: what the one before left is collected first (a session's fp32 weights are managed
        // arrays; without a full collection they would still be resident while the next session loads its copy).
        ResetPeakRss();
        var f = Benchmark.Forward(o, model);
        long? ourForwardRss = PeakRss();
        CollectAndResetPeakRss();
        var t = Benchmark.TrainStep(o, model, checkpointing: false);
        long? ourTrainRss = PeakRss();
        Add(new ComparisonRow(forward, CudaDreamName, f.MedianSeconds, f.GflopsPerSecond, ourForwardRss, f.Name));
        Add(new ComparisonRow(train, CudaDreamName, t.MedianSeconds, t.GflopsPerSecond, ourTrainRss, t.Detail));

        CollectAndResetPeakRss();
        var (ortSeconds, ortProvider) = OrtForward(o, model, threads);
        Add(new ComparisonRow(forward, OrtName, ortSeconds, f.GflopsPerSecond * f.MedianSeconds / ortSeconds, PeakRss(), ortProvider));
        Add(new ComparisonRow(train, OrtName, null, null, null, "ONNX Runtime's inference package has no training"));

        foreach (var r in Torch(o, model, torchBench, threads, f, t, forward, train)) Add(r);

        if (o.What.Contains("sample"))
        {
            CollectAndResetPeakRss();
            var ourSample = Benchmark.Sample(o with { SampleEngine = SamplerEngine.CudaDream }, model);
            Add(new ComparisonRow(sample, CudaDreamName, ourSample.MedianSeconds, null, PeakRss(), ourSample.Detail));
            CollectAndResetPeakRss();
            var ortSample = Benchmark.Sample(o with { SampleEngine = SamplerEngine.Ort }, model);
            Add(new ComparisonRow(sample, OrtName, ortSample.MedianSeconds, null, PeakRss(), ortSample.Detail));
        }

        var withRatios = rows;
        var versions = new Dictionary<string, string>
        {
            [CudaDreamName] = typeof(BenchmarkComparison).Assembly.GetName().Version?.ToString() ?? "?",
            [OrtName] = OrtVersion(),
            [".NET"] = Environment.Version.ToString(),
        };
        var torchNote = withRatios.FirstOrDefault(r => r.Library == TorchName && r.MedianSeconds != null)?.Note;
        if (torchNote != null) versions[TorchName] = torchNote.Split(';')[0];
        return new ComparisonReport(Benchmark.Machine(), threads, versions, withRatios);
    }

    /// <summary>The UNet forward in ONNX Runtime on the folder's graph, with the inputs CudaDream's forward gets; CUDA EP when it loads, else CPU.</summary>
    private static (double Seconds, string Provider) OrtForward(BenchmarkOptions o, ModelFolder m, int threads)
    {
        var shapes = Benchmark.UNetShapes(o, m);
        var inputs = Benchmark.RandomInputs(shapes);
        using var options = new SessionOptions { IntraOpNumThreads = threads, GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL, LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR };
        string provider = "CPU execution provider";
        if (o.Backend.Kind == ExecutionBackend.BackendKind.Cuda && Sampling.Engines.OrtPipelineEngine.CudaUnavailableReason() == null)
        {
            options.AppendExecutionProvider_CUDA(0);
            provider = "CUDA execution provider";
        }
        using var session = new InferenceSession(m.ModelPath(ModelFolder.UNet), options);
        var values = inputs.Select(kv => Sampling.Engines.OrtTensors.ToOrt(kv.Value, session.InputMetadata[kv.Key].ElementDataType)).ToList();
        try
        {
            var names = inputs.Keys.ToList();
            using var runOptions = new RunOptions();
            double seconds = Benchmark.Median(o.Repeats, () =>
            {
                using var outputs = session.Run(runOptions, names, values, session.OutputNames);
            });
            return (seconds, $"{provider}, {threads} intra-op threads, graph optimisations on");
        }
        finally
        {
            foreach (var v in values) v.Dispose();
        }
    }

    /// <summary>The PyTorch rows: cudadream-torchbench as a child process (its own proof, timings and peak RSS in a JSON file).</summary>
    private static IEnumerable<ComparisonRow> Torch(BenchmarkOptions o, ModelFolder m, string? torchBench, int threads, BenchmarkResult ourForward, BenchmarkResult ourTrain, string forward, string train)
    {
        if (torchBench == null || !File.Exists(torchBench))
        {
            const string why = "not built: run ./build.sh bench-compare";
            return [new ComparisonRow(forward, TorchName, null, null, null, why), new ComparisonRow(train, TorchName, null, null, null, why)];
        }
        string json = Path.Combine(Path.GetTempPath(), $"cudadream-torchbench-{Environment.ProcessId}.json");
        var args = new List<string> { torchBench, "--model", m.Root, "--batch", $"{o.Batch}", "--size", $"{o.Width}", "--repeats", $"{o.Repeats}", "--threads", $"{threads}", "--json", json };
        // A fixture folder carries PyTorch's own outputs: the reference UNet must reproduce them before its times count.
        string reference = Path.Combine(m.Root, "refs", "unet.safetensors");
        if (File.Exists(reference)) args.AddRange(["--verify", reference]);
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args) start.ArgumentList.Add(a);
        try
        {
            using var process = Process.Start(start) ?? throw new CudaDreamException("could not start dotnet for " + torchBench);
            var stderr = process.StandardError.ReadToEndAsync();
            process.StandardOutput.ReadToEnd();
            process.WaitForExit();
            if (process.ExitCode != 0)
            {
                string why = "failed: " + (stderr.Result.Split('\n', StringSplitOptions.RemoveEmptyEntries).LastOrDefault() ?? $"exit code {process.ExitCode}");
                return [new ComparisonRow(forward, TorchName, null, null, null, why), new ComparisonRow(train, TorchName, null, null, null, why)];
            }
            using var doc = JsonDocument.Parse(File.ReadAllText(json));
            var root = doc.RootElement;
            string library = root.TryGetProperty("library", out var lib) ? lib.GetString() ?? TorchName : TorchName;
            long? rss = root.TryGetProperty("peak_rss_bytes", out var r) && r.ValueKind == JsonValueKind.Number ? r.GetInt64() : null;
            string verified = root.TryGetProperty("verified", out var v) && v.TryGetProperty("reference", out var refPath) && refPath.ValueKind == JsonValueKind.String
                ? $"matched PyTorch's reference output (max error {v.GetProperty("max_abs_error").GetDouble():G2} of max {v.GetProperty("max_abs_reference").GetDouble():G3})"
                : "not checked against a reference (no refs/unet.safetensors in the folder)";
            var results = root.GetProperty("results").EnumerateArray().ToDictionary(x => x.GetProperty("name").GetString() ?? "", x => x.GetProperty("median_seconds").GetDouble());
            string name = TorchName;
            var rows = new List<ComparisonRow>();
            if (results.TryGetValue("unet forward", out double tf))
                rows.Add(new ComparisonRow(forward, name, tf, ourForward.GflopsPerSecond * ourForward.MedianSeconds / tf, rss, $"{library}; {verified}"));
            if (results.TryGetValue("lora train step", out double tt))
                rows.Add(new ComparisonRow(train, name, tt, ourTrain.GflopsPerSecond * ourTrain.MedianSeconds / tt, rss, $"{library}; rank-4 attention LoRA, forward + MSE + backward"));
            return rows;
        }
        finally
        {
            File.Delete(json);
        }
    }

    private static string OrtVersion()
    {
        try { return OrtEnv.Instance().GetVersionString(); }
        catch (Exception e) when (e is OnnxRuntimeException or DllNotFoundException or TypeInitializationException) { return "not loadable"; }
    }

    /// <summary>A full, compacting collection that returns freed memory to the OS, then <see cref="ResetPeakRss"/>.</summary>
    private static void CollectAndResetPeakRss()
    {
        System.Runtime.GCSettings.LargeObjectHeapCompactionMode = System.Runtime.GCLargeObjectHeapCompactionMode.CompactOnce;
        GC.Collect(2, GCCollectionMode.Aggressive, blocking: true, compacting: true);
        GC.WaitForPendingFinalizers();
        ResetPeakRss();
    }

    /// <summary>Linux: clears the process's peak RSS (VmHWM), so the next reading covers only what ran since.</summary>
    private static void ResetPeakRss()
    {
        try { if (OperatingSystem.IsLinux()) File.WriteAllText("/proc/self/clear_refs", "5"); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
    }

    private static long? PeakRss()
    {
        if (!OperatingSystem.IsLinux()) return null;
        try
        {
            var line = File.ReadLines("/proc/self/status").FirstOrDefault(l => l.StartsWith("VmHWM:", StringComparison.Ordinal));
            if (line == null) return null;
            return KibibyteLine(line);
        }
        catch (IOException) { return null; }
    }

    /// <summary>
    /// Bytes of a /proc/self/status line such as "VmHWM:\t  1234 kB": a tab, then spaces that shrink as the number grows
    /// (none at all for 8 digits), so the line is split on both.
    /// </summary>
    internal static long KibibyteLine(string line) =>
        long.Parse(line.Split([' ', '\t'], StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) * 1024;

    public static string FormatRow(ComparisonRow r) =>
        $"{r.Measurement,-30} {r.Library,-14} " +
        (r.MedianSeconds is double s ? $"{s * 1000,10:F1} ms" : $"{"–",13}") +
        (r.RatioToCudaDream is double x ? $" {x,6:F2}×" : $" {"",7}") +
        (r.GflopsPerSecond is double g ? $" {g,8:F1} GFLOP/s" : new string(' ', 17)) +
        (r.PeakRssBytes is long b ? $" {b / (1024.0 * 1024),8:F0} MiB" : new string(' ', 13)) + $"  {r.Note}";

    public static string Header =>
        $"{"measurement",-30} {"library",-14} {"median",13} {"ratio",7} {"rate",17} {"peak RSS",13}  note (peak RSS: the process's high-water mark while that measurement ran)";

    /// <summary>compare.json and compare.png (median times per measurement, one bar per library) into a folder, each written atomically.</summary>
    public static void Write(ComparisonReport report, string folder)
    {
        Directory.CreateDirectory(folder);
        AtomicFile.WriteAllText(Path.Combine(folder, "compare.json"), JsonSerializer.Serialize(report, new JsonSerializerOptions
        {
            WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        }));
        PngFile.Write(Path.Combine(folder, "compare.png"), Chart(report));
    }

    /// <summary>Grouped bars: one group per measurement, one bar per library (time relative to CudaDream's, so all groups share an axis).</summary>
    public static RgbImage Chart(ComparisonReport report, int width = 900, int height = 480)
    {
        var plot = new Plot();
        plot.Title($"time relative to CudaDream (lower is faster) — {report.Threads} threads");
        var measured = report.Rows.Where(r => r.RatioToCudaDream != null).ToList();
        var measurements = measured.Select(r => r.Measurement).Distinct().ToList();
        var libraries = measured.Select(r => r.Library).Distinct().ToList();
        Color[] palette = [new(31, 119, 180), new(255, 127, 14), new(44, 160, 44), new(214, 39, 40)];
        var bars = new List<ScottPlot.Bar>();
        for (int mi = 0; mi < measurements.Count; mi++)
            for (int li = 0; li < libraries.Count; li++)
            {
                var row = measured.FirstOrDefault(r => r.Measurement == measurements[mi] && r.Library == libraries[li]);
                if (row == null) continue;
                double x = mi * (libraries.Count + 1) + li;
                bars.Add(new ScottPlot.Bar { Position = x, Value = row.RatioToCudaDream!.Value, FillColor = palette[li % palette.Length], Label = $"{row.RatioToCudaDream:F2}×" });
            }
        if (bars.Count == 0) plot.Add.Annotation("nothing measured", Alignment.MiddleCenter);
        else
        {
            var series = plot.Add.Bars(bars);
            series.ValueLabelStyle.FontSize = 12;
            var ticks = measurements.Select((m, i) => new Tick(i * (libraries.Count + 1) + (libraries.Count - 1) / 2.0, m)).ToArray();
            plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(ticks);
            for (int li = 0; li < libraries.Count; li++)
                plot.Legend.ManualItems.Add(new LegendItem { LabelText = libraries[li], FillColor = palette[li % palette.Length] });
            plot.ShowLegend(Alignment.UpperLeft);
            plot.Axes.Margins(bottom: 0, top: 0.35); // headroom above the bars for the legend
        }
        return LossCurvePlot.ToImage(plot, width, height);
    }
}
