using System.Diagnostics;
using System.Text.Json;
using CommandLine;
using CudaDream.Engine;
using CudaDream.Engine.Backends;
using CudaDream.Engine.Backends.Cuda;
using CudaDream.Engine.Backends.Cuda.Interop;
using CudaDream.Engine.Backends.Emu;
using CudaDream.Engine.Ops;

namespace CudaDream.Cli.Commands;

/// <summary>
/// `cudadream kernels build`: compiles every kernels/*.cu with NVRTC for the given architectures
/// (no GPU needed) and prints registers, shared memory, spills and mma (tensor-core) instructions per kernel; `--emu` builds the
/// emulator libraries instead. Exit code 1 on any compile error.
/// </summary>
[Verb("kernels build", HelpText = "Compile all CUDA kernels with NVRTC (no GPU needed) and report registers, shared memory, spills and tensor-core (mma) instructions.")]
public sealed class KernelsBuildCommand : ICommand
{
    [Option("arch", Separator = ',', Default = new[] { "sm_75", "sm_80", "sm_86", "sm_89", "sm_90" },
        HelpText = "Architectures, comma-separated: sm_XX (CUBIN), sm_90a, or compute_XX (PTX).")]
    public IEnumerable<string> Archs { get; set; } = [];

    [Option("emu", HelpText = "Build the emulator libraries (sm_75, sm_80, sm_90 tiers) with the host C++ compiler instead.")]
    public bool Emu { get; set; }

    [Option("cache", HelpText = "Cache folder (default: CUDADREAM_CACHE or ~/.cache/cudadream).")]
    public string? Cache { get; set; }

    [Option("json", HelpText = "Print the report as JSON.")]
    public bool Json { get; set; }

    public int Run() => Emu ? BuildEmu() : BuildNvrtc();

    private int BuildEmu()
    {
        var cache = Cache ?? KernelSources.DefaultCacheDir();
        foreach (var tier in EmuLibrary.Tiers)
        {
            var sw = Stopwatch.StartNew();
            var path = EmuLibrary.Build(tier, cache);
            Console.WriteLine($"emu sm_{tier / 10}: {path} ({sw.Elapsed.TotalSeconds:F1} s)");
        }
        return 0;
    }

    private int BuildNvrtc()
    {
        var (major, minor) = NvrtcApi.GetVersion();
        var archs = Archs.Select(a => a.Trim()).Where(a => a.Length > 0).ToList();
        foreach (var a in archs)
            if (!System.Text.RegularExpressions.Regex.IsMatch(a, @"^(sm|compute)_\d+a?$"))
                throw new CudaDreamException($"--arch: '{a}' is not an architecture (sm_86, sm_90a, compute_90)");
        var report = new List<object>();
        int failures = 0;
        var total = Stopwatch.StartNew();
        if (!Json) Console.WriteLine($"NVRTC {major}.{minor}, {KernelSources.KernelFiles.Count} files, {KernelSources.KernelFiles.Sum(f => f.Exports.Count)} kernels");
        foreach (var arch in archs)
        {
            foreach (var file in KernelSources.KernelFiles)
            {
                CompiledKernelFile c;
                try { c = KernelCompiler.Compile(file, arch, Cache); }
                catch (CudaDreamException e)
                {
                    failures++;
                    Console.Error.WriteLine($"error: {e.Message}");
                    continue;
                }
                if (!Json)
                {
                    Console.WriteLine($"{arch} {file.Name}: {c.Image.Length} bytes {(c.IsPtx ? "PTX" : "CUBIN")}, {c.Seconds:F2} s{(c.FromCache ? " (cached)" : "")}");
                    foreach (var u in c.Usage.OrderBy(u => u.Alias, StringComparer.Ordinal))
                        Console.WriteLine($"    {u.Alias,-34} {u.Registers,3} registers {u.SharedBytes,6} B smem {u.StackBytes,5} B stack {u.SpillStoreBytes,4} B spill stores {u.SpillLoadBytes,4} B spill loads {u.MmaInstructions,4} mma {u.LdmatrixInstructions,4} ldmatrix");
                }
                report.Add(new { arch, file = file.Name, bytes = c.Image.Length, ptx = c.IsPtx, seconds = c.Seconds, cached = c.FromCache, kernels = c.Usage });
            }
        }
        if (Json) Console.WriteLine(JsonSerializer.Serialize(new { nvrtc = $"{major}.{minor}", failures, results = report }, new JsonSerializerOptions { WriteIndented = true }));
        else
        {
            var tensorCore = report.Cast<dynamic>().SelectMany(r => (IEnumerable<KernelResourceUsage>)r.kernels).Where(u => u.MmaInstructions > 0).Select(u => u.Alias).Distinct().ToList();
            Console.WriteLine($"tensor-core kernels (mma in their PTX): {(tensorCore.Count == 0 ? "none" : string.Join(", ", tensorCore))}");
            Console.WriteLine($"{(failures == 0 ? "ok" : $"{failures} file(s) failed")}: {archs.Count} architecture(s) in {total.Elapsed.TotalSeconds:F1} s");
        }
        return failures == 0 ? 0 : 1;
    }
}
