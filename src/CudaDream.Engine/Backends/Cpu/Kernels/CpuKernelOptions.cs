namespace CudaDream.Engine.Backends.Cpu.Kernels;

/// <summary>
/// Process-wide knobs of the fast CPU kernels. A static setting rather than a parameter because the
/// executor, the autodiff and the tests all call the same kernels and one machine has one core budget.
/// </summary>
public static class CpuKernelOptions
{
    private static int _maxDegreeOfParallelism = Environment.ProcessorCount;

    /// <summary>Most worker threads one fast-kernel call uses (default: <see cref="Environment.ProcessorCount"/>; 1 = single-threaded).</summary>
    public static int MaxDegreeOfParallelism
    {
        get => _maxDegreeOfParallelism;
        set => _maxDegreeOfParallelism = value >= 1
            ? value
            : throw new ArgumentOutOfRangeException(nameof(value), value, "the degree of parallelism must be at least 1");
    }

    internal static ParallelOptions ParallelOptions(int degree) => new() { MaxDegreeOfParallelism = degree };
}
