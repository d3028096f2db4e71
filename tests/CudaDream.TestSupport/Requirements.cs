using System.Diagnostics;
using System.Runtime.Intrinsics.X86;
using CudaDream.Engine.Backends.Cuda.Interop;
using Xunit;

namespace CudaDream.TestSupport;

/// <summary>What a test needs of the machine it runs on; a test that cannot run here is skipped with the reason, not passed.</summary>
public enum Requirement
{
    /// <summary>AVX2 and FMA (the fast kernels' x64 paths).</summary>
    Avx2Fma,
    /// <summary>No NVIDIA driver: the test checks what a machine without a GPU reports.</summary>
    NoCudaDriver,
    /// <summary>NVRTC loads (CI unpacks Debian's).</summary>
    Nvrtc,
    /// <summary>No NVRTC: the test checks the error a machine without it reports.</summary>
    NoNvrtc,
    /// <summary>A tmpfs can be mounted (root in a machine that allows mounts).</summary>
    MountTmpfs,
}

public static class Requirements
{
    private static readonly Lazy<bool> CanMount = new(ProbeMount);

    /// <summary>Null when the machine meets <paramref name="r"/>, else why the test is skipped.</summary>
    public static string? Unmet(Requirement r) => r switch
    {
        Requirement.Avx2Fma => Avx2.IsSupported && Fma.IsSupported ? null : "this CPU has no AVX2/FMA (the kernels use their other paths)",
        Requirement.NoCudaDriver => NativeLibraries.IsAvailable(NativeLibraries.Driver) ? "this machine has an NVIDIA driver (device-check covers the CUDA path)" : null,
        Requirement.Nvrtc => NativeLibraries.IsAvailable(NativeLibraries.Nvrtc) ? null : "NVRTC is not installed (./build.sh kernels unpacks Debian's)",
        Requirement.NoNvrtc => NativeLibraries.IsAvailable(NativeLibraries.Nvrtc) ? "NVRTC is installed (the compile test runs instead)" : null,
        Requirement.MountTmpfs => CanMount.Value ? null : "mounting a tmpfs is not permitted here (the fault-injection seam tests cover the same paths)",
        _ => throw new ArgumentOutOfRangeException(nameof(r)),
    };

    private static bool ProbeMount()
    {
        if (!OperatingSystem.IsLinux()) return false;
        var dir = Directory.CreateTempSubdirectory("cudadream-mount-probe-");
        try
        {
            if (!Run("mount", $"-t tmpfs -o size=64k tmpfs {dir.FullName}")) return false;
            Run("umount", dir.FullName);
            return true;
        }
        finally { try { dir.Delete(); } catch (IOException) { } }
    }

    private static bool Run(string file, string args)
    {
        try
        {
            using var p = Process.Start(new ProcessStartInfo(file, args) { RedirectStandardError = true, RedirectStandardOutput = true })!;
            p.WaitForExit(10_000);
            return p.HasExited && p.ExitCode == 0;
        }
        catch (System.ComponentModel.Win32Exception) { return false; }
    }
}

/// <summary>A fact that runs only where the machine meets its requirements, and is reported as skipped elsewhere.</summary>
public sealed class FactWhenAttribute : FactAttribute
{
    public FactWhenAttribute(params Requirement[] requirements)
    {
        var unmet = requirements.Select(Requirements.Unmet).FirstOrDefault(r => r != null);
        if (unmet != null) Skip = unmet;
    }
}

/// <summary>A theory that runs only where the machine meets its requirements, and is reported as skipped elsewhere.</summary>
public sealed class TheoryWhenAttribute : TheoryAttribute
{
    public TheoryWhenAttribute(params Requirement[] requirements)
    {
        var unmet = requirements.Select(Requirements.Unmet).FirstOrDefault(r => r != null);
        if (unmet != null) Skip = unmet;
    }
}
