using CudaDream.Engine.Backends.Cpu.Kernels;
using Xunit;

namespace CudaDream.Engine.Tests.Cpu;

[Collection(ThreadCountCollection.Name)]
public class CpuKernelOptionsTests
{
    [Fact]
    public void Degree_of_parallelism_must_be_positive()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => CpuKernelOptions.MaxDegreeOfParallelism = 0);
        Assert.True(CpuKernelOptions.MaxDegreeOfParallelism >= 1);
    }

    [Fact]
    public void Fast_kernels_give_the_same_result_on_one_thread_and_many()
    {
        // GEMM's tasks own disjoint blocks of C and sum over the same k order, so the thread count cannot change a bit.
        int m = 300, n = 200, k = 170;
        var a = KernelTestSupport.RandomFloats(1, m * k);
        var b = KernelTestSupport.RandomFloats(2, k * n);
        var one = new float[m * n];
        var many = new float[m * n];
        int saved = CpuKernelOptions.MaxDegreeOfParallelism;
        try
        {
            CpuKernelOptions.MaxDegreeOfParallelism = 1;
            GemmFast.Gemm(false, false, m, n, k, 1f, a, k, b, n, 0f, one, n);
            CpuKernelOptions.MaxDegreeOfParallelism = 4;
            GemmFast.Gemm(false, false, m, n, k, 1f, a, k, b, n, 0f, many, n);
        }
        finally
        {
            CpuKernelOptions.MaxDegreeOfParallelism = saved;
        }
        Assert.Equal(one, many);
    }
}
