using System.Diagnostics;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using System.Text.RegularExpressions;
using CommandLine;
using CudaDream.Engine;
using CudaDream.Engine.Backends;
using CudaDream.Engine.Backends.Cuda.Interop;
using CudaDream.Engine.Backends.Device;
using CudaDream.Engine.Formats;
using CudaDream.Engine.Ops;
using CudaDream.Engine.Tensors;

namespace CudaDream.Cli.Commands;

/// <summary>
/// `cudadream device-check`: the CUDA test matrix for a machine with a GPU and no SDK. Every kernel
/// against the CPU reference (the conformance cases), then `graph run` / `graph grad` on the sd-tiny
/// fixtures against the PyTorch references, with a text and a JSON report. `--summarize` folds the
/// reports of the runs under compute-sanitizer (device-check.sh) into one.
/// </summary>
[Verb("device-check", HelpText = "Run every kernel against the CPU reference and graph run/grad on the sd-tiny fixtures on a device; write a report.")]
public sealed class DeviceCheckCommand : ICommand
{
    [Option("backend", Default = "cuda", HelpText = "The device to check: cuda[:N], or emu/emu75/emu90 for a dry run without a GPU.")]
    public string Backend { get; set; } = "cuda";

    [Option("fixtures", HelpText = "The sd-tiny fixture folder (default: fixtures/sd-tiny beside the bundle's bin folder).")]
    public string? Fixtures { get; set; }

    [Option("out", Required = true, HelpText = "Report folder: report.json, report.txt and the graphs' output tensors.")]
    public string Out { get; set; } = "";

    [Option("only", Default = "all", HelpText = "kernels, graphs or all.")]
    public string Only { get; set; } = "all";

    [Option("summarize", HelpText = "Fold <out>/checks and <out>/sanitizer-<tool>.{log,rc} into <out>/report.json and report.txt.")]
    public bool Summarize { get; set; }

    /// <summary>DESIGN.md: fp32 outputs and gradients within 1e-4 · max|ref| of PyTorch.</summary>
    private const double GraphTolerance = 1e-4;

    private static readonly JsonSerializerOptions JsonOptions = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals, // a failed case's error is NaN
        Converters = { new JsonStringEnumConverter() },
    };

    public int Run()
    {
        if (Summarize) return WriteSummary();
        if (Only is not ("all" or "kernels" or "graphs")) throw new CudaDreamException($"--only '{Only}' is not kernels, graphs or all");
        var backend = Backends.Require(Backend);
        if (backend.Kind == ExecutionBackend.BackendKind.Cpu) throw new CudaDreamException("--backend cpu is the reference itself: check cuda, or emu for a dry run");
        var fixtures = Fixtures ?? Path.Combine(AppContext.BaseDirectory, "..", "fixtures", "sd-tiny");
        if (Only != "kernels" && !File.Exists(Path.Combine(fixtures, "refs", "unet.safetensors")))
            throw new CudaDreamException($"{fixtures}: not an sd-tiny fixture folder (refs/unet.safetensors is missing); pass --fixtures");
        Directory.CreateDirectory(Out);

        var sw = Stopwatch.StartNew();
        var report = new CheckReport { Backend = backend.Name, Started = DateTime.UtcNow.ToString("o"), Host = Environment.MachineName };
        try
        {
            using (var device = backend.OpenDevice())
            {
                report.Device = device.Name;
                report.ComputeCapability = device.ComputeCapability;
                if (backend.Kind == ExecutionBackend.BackendKind.Cuda)
                {
                    var (major, minor) = NvrtcApi.GetVersion();
                    report.Nvrtc = $"{major}.{minor}";
                }
                Console.WriteLine($"device-check on {device.Name}");
                if (Only != "graphs") report.Kernels = CheckKernels(device);
            }
            if (Only != "kernels") report.Graphs = CheckGraphs(backend, fixtures);
        }
        catch (CudaDreamException e)
        {
            // No device (missing driver or library): still a report, so the script's summary says why.
            report.Failure = e.Message;
            Console.Error.WriteLine($"error: {e.Message}");
        }
        report.Seconds = sw.Elapsed.TotalSeconds;
        report.Passed = report.Failure == null && report.Kernels.All(k => k.Passed) && report.Graphs.All(g => g.Passed);
        AtomicFile.WriteAllText(Path.Combine(Out, "report.json"), JsonSerializer.Serialize(report, JsonOptions));
        AtomicFile.WriteAllText(Path.Combine(Out, "report.txt"), FormatReport(report, []));
        Console.WriteLine($"{(report.Passed ? "PASSED" : "FAILED")}: {report.Kernels.Count(k => k.Passed)}/{report.Kernels.Count} kernel cases, " +
            $"{report.Graphs.Count(g => g.Passed)}/{report.Graphs.Count} graph checks in {report.Seconds:F1} s; report in {Out}");
        return report.Passed ? 0 : 1;
    }

    private static List<ConformanceResult> CheckKernels(IKernelDevice device)
    {
        var results = new List<ConformanceResult>();
        foreach (var c in ConformanceCases.All)
        {
            var r = ConformanceRunner.Run(c, device);
            results.Add(r);
            if (!r.Passed) Console.WriteLine($"  FAIL kernel case '{c.Name}': {r.Failure ?? $"error {r.WorstError:G3} > {c.Tolerance:G2}"}");
        }
        // The attention cases again in bf16 and fp16 where the device has those tensor cores: the FlashAttention-2 mma
        // kernels run only with reduced-precision storage (DESIGN.md's bounds; gradients by cosine).
        foreach (var t in new[] { DType.BF16, DType.F16 }.Where(t => AttentionKernels.HasTensorCores(device.ComputeCapability, t)))
            foreach (var c in ConformanceCases.All.Where(c => c.Family == "attention"))
            {
                var r = ConformanceRunner.Run(c, device, t);
                r = r with { Case = $"{c.Name} in {t.ToString().ToLowerInvariant()}", Family = $"attention {t.ToString().ToLowerInvariant()}" };
                results.Add(r);
                if (!r.Passed) Console.WriteLine($"  FAIL kernel case '{r.Case}': {r.Failure ?? $"error {r.WorstError:G3} > {r.Tolerance:G2}"}");
            }
        Console.WriteLine($"kernels: {results.Count(r => r.Passed)}/{results.Count} conformance cases pass");
        return results;
    }

    /// <summary>One CLI invocation on a fixture and the reference tensors its output must reproduce.</summary>
    private sealed record GraphCheckSpec(string Name, string Refs, string[] Args, (string Output, string Reference)[] Compare, bool AllGradients = false);

    private static List<GraphCheckSpec> GraphSpecs(string f)
    {
        string P(string rel) => Path.Combine(f, rel);
        var unet = new[] { ("out_sample", "out_sample") };
        var lora = P("refs/unet_lora_grad.safetensors");
        string[] Grad(params string[] extra) =>
            ["graph", "grad", "--model", P("unet/model.onnx"), "--inputs", lora, "--target", "target", "--lora", lora, "--wrt", "lora,sample", .. extra];
        return
        [
            new("text_encoder", "refs/text_encoder.safetensors", ["graph", "run", "--model", P("text_encoder/model.onnx"), "--inputs", P("refs/text_encoder.safetensors")],
                [("last_hidden_state", "last_hidden_state"), ("pooler_output", "pooler_output")]),
            new("text_encoder unfused", "refs/text_encoder.safetensors", ["graph", "run", "--model", P("text_encoder/model.onnx"), "--inputs", P("refs/text_encoder.safetensors"), "--no-fuse"],
                [("last_hidden_state", "last_hidden_state"), ("pooler_output", "pooler_output")]),
            new("unet opset 14", "refs/unet.safetensors", ["graph", "run", "--model", P("unet/model.onnx"), "--inputs", P("refs/unet.safetensors")], unet),
            new("unet opset 14 unfused", "refs/unet.safetensors", ["graph", "run", "--model", P("unet/model.onnx"), "--inputs", P("refs/unet.safetensors"), "--no-fuse"], unet),
            new("unet opset 17", "refs/unet.safetensors", ["graph", "run", "--model", P("unet_opset17/model.onnx"), "--inputs", P("refs/unet.safetensors")], unet),
            new("vae_decoder", "refs/vae_decoder.safetensors", ["graph", "run", "--model", P("vae_decoder/model.onnx"), "--inputs", P("refs/vae_decoder.safetensors")],
                [("sample", "sample")]),
            new("vae_encoder moments", "refs/vae_encoder.safetensors", ["graph", "run", "--model", P("vae_encoder/model.onnx"), "--inputs", P("refs/vae_encoder.safetensors"),
                "--outputs", "moments=/quant_conv/Conv_output_0,mean=/Slice_output_0,std=/Exp_output_0"], [("moments", "moments"), ("mean", "mean"), ("std", "std")]),
            new("unet LoRA gradients", "refs/unet_lora_grad.safetensors", Grad(), [("loss", "loss"), ("out_sample", "out_sample"), ("sample.grad", "sample.grad")], AllGradients: true),
            new("unet LoRA gradients, checkpointing", "refs/unet_lora_grad.safetensors", Grad("--checkpointing"),
                [("loss", "loss"), ("out_sample", "out_sample"), ("sample.grad", "sample.grad")], AllGradients: true),
        ];
    }

    private List<GraphCheck> CheckGraphs(ExecutionBackend backend, string fixtures)
    {
        var outDir = Path.Combine(Out, "graphs");
        Directory.CreateDirectory(outDir);
        var checks = new List<GraphCheck>();
        foreach (var spec in GraphSpecs(fixtures))
        {
            var outPath = Path.Combine(outDir, Regex.Replace(spec.Name, "[^A-Za-z0-9]+", "_").Trim('_') + ".safetensors");
            string[] args = [.. spec.Args, "--out", outPath, "--backend", backend.Name];
            var sw = Stopwatch.StartNew();
            var (code, stdout, stderr) = RunVerb(args);
            var check = new GraphCheck { Name = spec.Name, Command = "cudadream " + string.Join(' ', args), Seconds = sw.Elapsed.TotalSeconds };
            if (code != 0) check.Failure = $"exit code {code}: {(stderr + stdout).Trim()}";
            else
            {
                var got = SafetensorsFile.ReadAll(outPath);
                var refs = SafetensorsFile.ReadAll(Path.Combine(fixtures, spec.Refs));
                var pairs = spec.Compare.ToList();
                if (spec.AllGradients) pairs.AddRange(refs.Keys.Where(k => k.EndsWith(".lora_down.weight.grad") || k.EndsWith(".lora_up.weight.grad")).Select(k => (k, k)));
                foreach (var (output, reference) in pairs)
                {
                    if (!got.TryGetValue(output, out var actual)) { check.Failure = $"the output has no tensor '{output}'"; break; }
                    var o = ConformanceRunner.Compare(output, refs[reference], actual.To(DType.F32), GraphTolerance);
                    check.Outputs.Add(new GraphOutput(output, o.Error, o.Passed));
                }
            }
            check.Passed = check.Failure == null && check.Outputs.All(o => o.Passed);
            checks.Add(check);
            Console.WriteLine($"  {(check.Passed ? "ok  " : "FAIL")} {spec.Name}: worst {check.Outputs.Select(o => o.Error).DefaultIfEmpty(double.NaN).Max():G3} " +
                $"over {check.Outputs.Count} tensors, {check.Seconds:F1} s{(check.Failure != null ? " — " + check.Failure : "")}");
        }
        return checks;
    }

    /// <summary>Runs a verb in this process with its console output captured (the report shows it on failure).</summary>
    private static (int Code, string Out, string Err) RunVerb(string[] args)
    {
        var (oldOut, oldErr) = (Console.Out, Console.Error);
        var (stdout, stderr) = (new StringWriter(), new StringWriter());
        try
        {
            Console.SetOut(stdout);
            Console.SetError(stderr);
            return (Program.Run(args), stdout.ToString(), stderr.ToString());
        }
        finally
        {
            Console.SetOut(oldOut);
            Console.SetError(oldErr);
        }
    }

    // ------------------------------------------------------------------ summary with sanitizer runs
    private int WriteSummary()
    {
        var mainPath = Path.Combine(Out, "checks", "report.json");
        if (!File.Exists(mainPath)) throw new CudaDreamException($"{mainPath}: file not found (run device-check with --out {Path.Combine(Out, "checks")} first)");
        var report = JsonSerializer.Deserialize<CheckReport>(File.ReadAllText(mainPath), JsonOptions)
            ?? throw new InvalidFileException(mainPath, "not a device-check report");
        var sanitizers = new List<SanitizerRun>();
        foreach (var tool in new[] { "memcheck", "racecheck", "synccheck", "initcheck" })
        {
            var log = Path.Combine(Out, $"sanitizer-{tool}.log");
            var rcPath = Path.Combine(Out, $"sanitizer-{tool}.rc");
            var text = File.Exists(log) ? File.ReadAllText(log) : "";
            if (!File.Exists(rcPath))
            {
                // device-check.sh writes why a tool did not run into its log.
                sanitizers.Add(new SanitizerRun(tool, false, null, null, text.Trim() is { Length: > 0 } why ? why : "not run"));
                continue;
            }
            var m = Regex.Match(text, @"ERROR SUMMARY: (\d+) error");
            int? errors = m.Success ? int.Parse(m.Groups[1].Value) : null;
            var rc = int.TryParse(File.ReadAllText(rcPath).Trim(), out var v) ? v : -1;
            sanitizers.Add(new SanitizerRun(tool, true, rc, errors, Path.GetFileName(log)));
        }
        bool sanitizersClean = sanitizers.Where(s => s.Ran).All(s => s.ExitCode == 0 && (s.Errors ?? 0) == 0);
        bool passed = report.Passed && sanitizersClean;
        var summary = new { report, sanitizers, passed };
        AtomicFile.WriteAllText(Path.Combine(Out, "report.json"), JsonSerializer.Serialize(summary, JsonOptions));
        var text2 = FormatReport(report, sanitizers);
        AtomicFile.WriteAllText(Path.Combine(Out, "report.txt"), text2);
        Console.Write(text2);
        return passed ? 0 : 1;
    }

    private static string FormatReport(CheckReport r, IReadOnlyList<SanitizerRun> sanitizers)
    {
        var s = new StringBuilder();
        s.AppendLine($"cudadream device-check — {r.Device} (backend {r.Backend}, compute capability {r.ComputeCapability}{(r.Nvrtc != null ? $", NVRTC {r.Nvrtc}" : "")})");
        s.AppendLine($"started {r.Started} on {r.Host}, {r.Seconds:F1} s");
        if (r.Failure != null) s.AppendLine($"could not run: {r.Failure}");
        if (r.Backend.StartsWith("emu", StringComparison.Ordinal))
            s.AppendLine("NOTE: emulated device (dry run): these are not GPU results.");
        s.AppendLine();
        s.AppendLine($"kernels: {r.Kernels.Count(k => k.Passed)}/{r.Kernels.Count} conformance cases pass (device vs CPU reference)");
        foreach (var family in r.Kernels.GroupBy(k => k.Family).OrderBy(g => g.Key))
            s.AppendLine($"  {family.Key,-15} {family.Count(k => k.Passed),3}/{family.Count(),-3} worst error {family.Select(k => k.WorstError).DefaultIfEmpty(0).Max():G3}");
        foreach (var k in r.Kernels.Where(k => !k.Passed))
            s.AppendLine($"  FAIL {k.Case}: {k.Failure ?? string.Join(", ", k.Outputs.Where(o => !o.Passed).Select(o => $"{o.Name} error {o.Error:G3} ({o.Mismatches} elements)"))}");
        s.AppendLine();
        s.AppendLine($"graphs: {r.Graphs.Count(g => g.Passed)}/{r.Graphs.Count} sd-tiny checks within {GraphTolerance:G2} · max|ref| of PyTorch");
        foreach (var g in r.Graphs)
            s.AppendLine($"  {(g.Passed ? "ok  " : "FAIL")} {g.Name,-36} worst {g.Outputs.Select(o => o.Error).DefaultIfEmpty(double.NaN).Max():G3} " +
                $"({g.Outputs.Count} tensors) {g.Seconds,7:F1} s{(g.Failure != null ? "  " + g.Failure : "")}");
        if (sanitizers.Count > 0)
        {
            s.AppendLine();
            s.AppendLine("compute-sanitizer (kernel cases):");
            foreach (var t in sanitizers)
                s.AppendLine(t.Ran ? $"  {t.Tool,-10} exit {t.ExitCode}, {(t.Errors?.ToString() ?? "?")} errors ({t.Note})" : $"  {t.Tool,-10} {t.Note}");
        }
        s.AppendLine();
        bool passed = r.Passed && sanitizers.Where(t => t.Ran).All(t => t.ExitCode == 0 && (t.Errors ?? 0) == 0);
        s.AppendLine(passed ? "PASSED" : "FAILED");
        return s.ToString();
    }

    private sealed class CheckReport
    {
        public string Backend { get; set; } = "";
        public string Device { get; set; } = "";
        public int ComputeCapability { get; set; }
        public string? Nvrtc { get; set; }
        public string Started { get; set; } = "";
        public string Host { get; set; } = "";
        public double Seconds { get; set; }
        public bool Passed { get; set; }
        /// <summary>Why the check could not run at all (no device).</summary>
        public string? Failure { get; set; }
        public List<ConformanceResult> Kernels { get; set; } = [];
        public List<GraphCheck> Graphs { get; set; } = [];
    }

    private sealed class GraphCheck
    {
        public string Name { get; set; } = "";
        public string Command { get; set; } = "";
        public bool Passed { get; set; }
        public double Seconds { get; set; }
        public string? Failure { get; set; }
        public List<GraphOutput> Outputs { get; set; } = [];
    }

    private sealed record GraphOutput(string Name, double Error, bool Passed);

    private sealed record SanitizerRun(string Tool, bool Ran, int? ExitCode, int? Errors, string Note);
}
