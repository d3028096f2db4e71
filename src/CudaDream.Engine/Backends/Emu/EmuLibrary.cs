using System.Diagnostics;
using System.Runtime.InteropServices;

namespace CudaDream.Engine.Backends.Emu;

/// <summary>
/// The emulator for one architecture tier: kernels/*.cu + kernels/emu/runtime.cpp compiled by the
/// host C++ compiler (g++, or $CXX) with -D__CUDA_ARCH__=tier into a shared library, built once and
/// cached by the hash of every source, the flags and the compiler's version. Tiers 750, 800 and
/// 900 together run every __CUDA_ARCH__ branch of the kernels.
/// </summary>
public sealed class EmuLibrary
{
    public static readonly int[] Tiers = [750, 800, 900];
    private static readonly Dictionary<int, EmuLibrary> LoadedTiers = new();

    public int Tier { get; }
    public string Path { get; }
    public nint Handle { get; }
    public double BuildSeconds { get; }

    private EmuLibrary(int tier, string path, double seconds)
    {
        Tier = tier;
        Path = path;
        BuildSeconds = seconds;
        Handle = NativeLibrary.Load(path);
    }

    /// <summary>Loads (building first if needed) the library of <paramref name="tier"/>; one per process and tier.</summary>
    public static EmuLibrary Get(int tier, string? cacheDir = null)
    {
        if (!Tiers.Contains(tier)) throw new CudaDreamException($"emu tier {tier} does not exist (tiers: {string.Join(", ", Tiers)})");
        lock (LoadedTiers)
        {
            if (LoadedTiers.TryGetValue(tier, out var lib)) return lib;
            var sw = Stopwatch.StartNew();
            var path = Build(tier, cacheDir ?? KernelSources.DefaultCacheDir());
            lib = new EmuLibrary(tier, path, sw.Elapsed.TotalSeconds);
            LoadedTiers[tier] = lib;
            return lib;
        }
    }

    public nint Export(string name) =>
        NativeLibrary.TryGetExport(Handle, name, out var p) ? p : throw new CudaDreamException($"kernel '{name}' is not exported by {Path}");

    public bool TryExport(string name, out nint p) => NativeLibrary.TryGetExport(Handle, name, out p);

    private static string Compiler() => Environment.GetEnvironmentVariable("CXX") is { Length: > 0 } cxx ? cxx : "g++";

    private static string[] Flags(int tier) =>
        ["-O2", "-std=c++17", "-fPIC", "-fvisibility=hidden", "-U_FORTIFY_SOURCE", "-fno-strict-aliasing", $"-D__CUDA_ARCH__={tier}", "-w"];

    /// <summary>Builds the tier's library into the cache if it is not there; returns its path.</summary>
    public static string Build(int tier, string cacheDir)
    {
        if (!OperatingSystem.IsLinux())
            throw new CudaDreamException("the emu backend runs on Linux (x86-64 or aarch64) only");
        var cxx = Compiler();
        var version = RunCapture(cxx, ["--version"]) ?? throw new CudaDreamException(
            $"the emu backend needs a C++ compiler to build kernels/*.cu, and '{cxx}' was not found: install g++ (or set CXX)");
        var sources = KernelSources.Everything;
        var key = KernelSources.Hash(sources, string.Join(" ", Flags(tier)), version.Split('\n')[0], RuntimeInformation.ProcessArchitecture.ToString());
        var dir = System.IO.Path.Combine(cacheDir, "emu", key);
        var lib = System.IO.Path.Combine(dir, $"libcudadream_emu_sm{tier / 10}.so");
        if (File.Exists(lib)) return lib;
        Directory.CreateDirectory(dir);
        using var lockFile = AcquireLock(System.IO.Path.Combine(dir, $"sm{tier / 10}.lock"));
        if (File.Exists(lib)) return lib; // another process built it while we waited

        var work = System.IO.Path.Combine(dir, $"src-{tier}-{Environment.ProcessId}");
        foreach (var (name, text) in sources)
        {
            var p = System.IO.Path.Combine(work, name);
            Directory.CreateDirectory(System.IO.Path.GetDirectoryName(p)!);
            File.WriteAllText(p, text);
        }
        var units = sources.Keys.Where(n => n.EndsWith(".cu") && !n.Contains('/')).Append("emu/runtime.cpp").Append("emu/selftest.cu").ToList();
        var objects = new string[units.Count];
        var errors = new System.Collections.Concurrent.ConcurrentBag<string>();
        Parallel.For(0, units.Count, new ParallelOptions { MaxDegreeOfParallelism = Math.Max(1, Environment.ProcessorCount) }, i =>
        {
            objects[i] = System.IO.Path.Combine(work, units[i].Replace('/', '_') + ".o");
            var args = Flags(tier).Concat(["-I", work, "-c", "-x", "c++", System.IO.Path.Combine(work, units[i]), "-o", objects[i]]);
            var (rc, output) = Run(cxx, args);
            if (rc != 0) errors.Add($"kernels/{units[i]}:\n{output.Trim()}");
        });
        if (!errors.IsEmpty) throw new CudaDreamException($"{cxx} could not compile the emulator (sm_{tier / 10}):\n{string.Join("\n", errors)}");
        var tmp = lib + $".tmp{Environment.ProcessId}";
        var (lrc, lout) = Run(cxx, new[] { "-shared", "-o", tmp }.Concat(objects));
        if (lrc != 0) throw new CudaDreamException($"{cxx} could not link the emulator (sm_{tier / 10}):\n{lout.Trim()}");
        File.Move(tmp, lib, overwrite: true);
        try { Directory.Delete(work, true); } catch (IOException) { }
        return lib;
    }

    private static FileStream AcquireLock(string path)
    {
        for (int i = 0; ; i++)
        {
            try { return new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None); }
            catch (IOException) when (i < 1200) { Thread.Sleep(250); }
        }
    }

    private static string? RunCapture(string exe, string[] args)
    {
        try { var (rc, o) = Run(exe, args); return rc == 0 ? o : null; }
        catch (System.ComponentModel.Win32Exception) { return null; }
    }

    private static (int Rc, string Output) Run(string exe, IEnumerable<string> args)
    {
        var psi = new ProcessStartInfo(exe) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        var output = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, output + err.Result);
    }
}
