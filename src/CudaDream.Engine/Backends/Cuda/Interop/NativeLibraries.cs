using System.Reflection;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace CudaDream.Engine.Backends.Cuda.Interop;

/// <summary>
/// Finds the CUDA libraries for the [LibraryImport] declarations of this folder. Each logical name
/// ("cuda", "nvrtc", "cublas") maps to the file names of CUDA 11.8, 12.x and 13.x on Linux and
/// Windows, newest first. NVRTC can also come from CUDADREAM_NVRTC_PATH (a file or a folder) or
/// from artifacts/nvrtc next to the CLI (Debian's packages unpacked by build.sh); from a folder,
/// its libnvrtc-builtins are loaded first because NVRTC opens them by soname.
/// </summary>
public static class NativeLibraries
{
    public const string Driver = "cudadream_cuda";
    public const string Nvrtc = "cudadream_nvrtc";
    public const string Cublas = "cudadream_cublas";

    private static readonly Dictionary<string, nint> Loaded = new();
    private static readonly Dictionary<string, List<string>> Tried = new();

#pragma warning disable CA2255 // the resolver must be in place before the first P/Invoke of this assembly
    [ModuleInitializer]
    internal static void Register() => NativeLibrary.SetDllImportResolver(typeof(NativeLibraries).Assembly, Resolve);
#pragma warning restore CA2255

    private static nint Resolve(string name, Assembly assembly, DllImportSearchPath? path) =>
        name is Driver or Nvrtc or Cublas ? TryLoad(name) : 0;

    /// <summary>Candidate file names for a logical library, in the order tried.</summary>
    public static IReadOnlyList<string> Candidates(string logical)
    {
        bool win = OperatingSystem.IsWindows();
        return logical switch
        {
            Driver => win ? ["nvcuda.dll"] : ["libcuda.so.1", "libcuda.so"],
            Nvrtc => [.. NvrtcOverrides(), .. (win
                ? new[] { "nvrtc64_130_0.dll", "nvrtc64_120_0.dll", "nvrtc64_112_0.dll" }
                : new[] { "libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11.2", "libnvrtc.so" })],
            Cublas => win ? ["cublas64_13.dll", "cublas64_12.dll", "cublas64_11.dll"]
                          : ["libcublas.so.13", "libcublas.so.12", "libcublas.so.11", "libcublas.so"],
            _ => throw new ArgumentException(logical),
        };
    }

    private static IEnumerable<string> NvrtcOverrides()
    {
        var env = Environment.GetEnvironmentVariable("CUDADREAM_NVRTC_PATH");
        if (!string.IsNullOrEmpty(env))
        {
            if (File.Exists(env)) { yield return Path.GetFullPath(env); yield break; }
            if (Directory.Exists(env)) foreach (var f in NvrtcIn(env)) yield return f;
            yield break;
        }
        // artifacts/nvrtc next to artifacts/bin (build.sh unpacks Debian's NVRTC there)
        var local = Path.GetFullPath(Path.Combine(AppContext.BaseDirectory, "..", "nvrtc"));
        if (Directory.Exists(local)) foreach (var f in NvrtcIn(local)) yield return f;
    }

    private static IEnumerable<string> NvrtcIn(string dir) =>
        Directory.EnumerateFiles(dir, OperatingSystem.IsWindows() ? "nvrtc64_*.dll" : "libnvrtc.so.*", SearchOption.AllDirectories)
            .Where(f => !Path.GetFileName(f).Contains("builtins"))
            .OrderByDescending(f => Path.GetFileName(f), StringComparer.Ordinal);

    private static nint TryLoad(string logical)
    {
        lock (Loaded)
        {
            if (Loaded.TryGetValue(logical, out var h)) return h;
            var tried = new List<string>();
            foreach (var candidate in Candidates(logical))
            {
                tried.Add(candidate);
                if (Path.IsPathRooted(candidate)) PreloadBuiltins(candidate);
                if (NativeLibrary.TryLoad(candidate, out h))
                {
                    Loaded[logical] = h;
                    return h;
                }
            }
            Tried[logical] = tried;
            return 0;
        }
    }

    private static void PreloadBuiltins(string nvrtcFile)
    {
        var dir = Path.GetDirectoryName(nvrtcFile)!;
        var pattern = OperatingSystem.IsWindows() ? "nvrtc-builtins64_*.dll" : "libnvrtc-builtins.so.*";
        foreach (var f in Directory.EnumerateFiles(dir, pattern)) NativeLibrary.TryLoad(f, out _);
    }

    /// <summary>Loads the library or throws the one-line error that names what is missing.</summary>
    public static nint Require(string logical)
    {
        var h = TryLoad(logical);
        if (h != 0) return h;
        var what = logical switch
        {
            Driver => "the CUDA driver library",
            Nvrtc => "NVRTC (the CUDA runtime compiler)",
            _ => "cuBLAS",
        };
        var hint = logical switch
        {
            Driver => "install the NVIDIA driver",
            Nvrtc => "install NVRTC from CUDA 11.8, 12 or 13, or set CUDADREAM_NVRTC_PATH",
            _ => "install cuBLAS from CUDA 11.8, 12 or 13",
        };
        throw new CudaDreamException($"{what} was not found (tried {string.Join(", ", Tried.GetValueOrDefault(logical) ?? [])}): {hint}");
    }

    public static bool IsAvailable(string logical) => TryLoad(logical) != 0;
}
