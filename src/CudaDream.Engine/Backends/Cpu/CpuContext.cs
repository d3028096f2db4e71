namespace CudaDream.Engine.Backends.Cpu;

/// <summary>Settings of one CPU execution.</summary>
public sealed class CpuContext
{
    /// <summary>Use the blocked, vectorised, multi-threaded fp32 kernels where they exist (false = reference loops only).</summary>
    public bool UseFastKernels { get; init; } = true;
    /// <summary>Seed for in-graph random ops (RandomNormalLike), drawn from the counter-based generator.</summary>
    public ulong Seed { get; init; }
    /// <summary>Step index for in-graph random ops; with <see cref="Seed"/> it keys the draw.</summary>
    public long Step { get; init; }

    public static CpuContext Default { get; } = new();
    public static CpuContext Reference { get; } = new() { UseFastKernels = false };
}
