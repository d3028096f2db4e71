using CudaDream.Engine.Backends;
using CudaDream.Engine.Backends.Cpu;
using CudaDream.Engine.Backends.Cuda;
using CudaDream.Engine.Backends.Device;
using CudaDream.Engine.Backends.Emu;
using CudaDream.Engine.Graph;

namespace CudaDream.Engine;

/// <summary>
/// A backend by name, as <c>--backend</c> takes it: <c>cpu</c>; <c>emu</c> (the emulator at tier sm_80) or
/// <c>emu75</c> / <c>emu80</c> / <c>emu90</c>; <c>cuda</c> or <c>cuda:N</c> (GPU N).
/// </summary>
public sealed record ExecutionBackend
{
    public enum BackendKind { Cpu, Emu, Cuda }

    public BackendKind Kind { get; init; }
    /// <summary>Emulated architecture tier (750, 800, 900).</summary>
    public int EmuTier { get; init; } = 800;
    public int CudaOrdinal { get; init; }
    /// <summary>Emulator options other than the tier (guard pages, shuffle seed).</summary>
    public EmuOptions? Emu { get; init; }

    public static readonly ExecutionBackend Cpu = new() { Kind = BackendKind.Cpu };

    /// <summary>The names <see cref="Parse"/> accepts, for help texts.</summary>
    public static readonly IReadOnlyList<string> Names = ["cpu", "emu", "emu75", "emu80", "emu90", "cuda", "cuda:N"];

    public string Name => Kind switch
    {
        BackendKind.Cpu => "cpu",
        BackendKind.Emu => EmuTier == 800 ? "emu" : $"emu{EmuTier / 10}",
        _ => CudaOrdinal == 0 ? "cuda" : $"cuda:{CudaOrdinal}",
    };

    public override string ToString() => Name;

    public static ExecutionBackend Parse(string name)
    {
        var n = name.Trim().ToLowerInvariant();
        if (n == "cpu") return Cpu;
        if (n == "emu") return new ExecutionBackend { Kind = BackendKind.Emu };
        if (n.StartsWith("emu", StringComparison.Ordinal) && int.TryParse(n[3..], out var tier) && EmuLibrary.Tiers.Contains(tier * 10))
            return new ExecutionBackend { Kind = BackendKind.Emu, EmuTier = tier * 10 };
        if (n == "cuda") return new ExecutionBackend { Kind = BackendKind.Cuda };
        if (n.StartsWith("cuda:", StringComparison.Ordinal) && int.TryParse(n[5..], out var ordinal) && ordinal >= 0)
            return new ExecutionBackend { Kind = BackendKind.Cuda, CudaOrdinal = ordinal };
        throw new CudaDreamException($"--backend '{name}' is not a backend (cpu, emu, emu75, emu80, emu90, cuda, cuda:N)");
    }

    /// <summary>Opens the kernel device of an emu or cuda backend (cuda without a driver: a one-line error naming the library).</summary>
    public IKernelDevice OpenDevice() => Kind switch
    {
        BackendKind.Emu => new EmuDevice((Emu ?? new EmuOptions()) with { Tier = EmuTier }),
        BackendKind.Cuda => CudaDevice.Open(CudaOrdinal),
        _ => throw new InvalidOperationException("the cpu backend has no kernel device"),
    };

    /// <summary>
    /// An executor of <paramref name="plan"/> on this backend: in <paramref name="context"/> when given (a kernel device
    /// shared with other executors, constants resident once), else on a device of its own that it opens and owns.
    /// </summary>
    public IPlanExecutor CreateExecutor(ExecutionPlan plan, ulong seed = 0, bool useFastKernels = true, DeviceContext? context = null)
    {
        if (Kind == BackendKind.Cpu) return new CpuExecutor(plan, new CpuContext { Seed = seed, UseFastKernels = useFastKernels });
        if (context != null) return new DeviceExecutor(plan, context) { Seed = seed };
        return new DeviceExecutor(plan, OpenDevice(), ownsDevice: true) { Seed = seed };
    }

    /// <summary>A device context for the executors of one run (null on the cpu backend, whose executors share host memory anyway).</summary>
    public DeviceContext? OpenContext() => Kind == BackendKind.Cpu ? null : new DeviceContext(OpenDevice(), ownsDevice: true);
}
