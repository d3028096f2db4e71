using Xunit;

namespace CudaDream.Engine.Tests.Cpu;

/// <summary>
/// Tests that change the process-wide <c>CpuKernelOptions.MaxDegreeOfParallelism</c> run alone: a different
/// thread count changes how some reductions are split (last-bit differences), which would break the
/// bit-exactness checks of tests running beside them.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class ThreadCountCollection
{
    public const string Name = "Process-wide thread count";
}
