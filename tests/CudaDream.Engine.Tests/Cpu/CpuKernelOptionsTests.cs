using CudaDream.Engine.Backends.Cpu.Kernels;
using CudaDream.Engine.Ops;
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

    [Theory]
    [InlineData(300, 200, 170)] // op(B) fits in L2: unpacked, rows split in bands
    [InlineData(300, 520, 300)] // packed panels
    public void Fast_kernels_give_the_same_result_on_one_thread_and_many(int m, int n, int k)
    {
        // GEMM's tasks own disjoint blocks of C and sum over the same k order, so the thread count cannot change a bit.
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

    [Fact]
    public void Attention_forward_gives_the_same_result_on_one_thread_and_many()
    {
        // Query rows are independent in both attention kernels (narrow heads of 4 and tiled heads of 40).
        foreach (var shape in new[] { AttentionShape.Create(1, 300, 77, 2, 4), AttentionShape.Create(1, 200, 150, 2, 40) })
        {
            var q = KernelTestSupport.RandomFloats(1, (int)shape.QueryLengthTotal);
            var k = KernelTestSupport.RandomFloats(2, (int)shape.KeyLengthTotal);
            var v = KernelTestSupport.RandomFloats(3, (int)shape.ValueLengthTotal);
            var (one, many) = (new float[shape.OutputLengthTotal], new float[shape.OutputLengthTotal]);
            var (lseOne, lseMany) = (new float[shape.LseLength], new float[shape.LseLength]);
            int saved = CpuKernelOptions.MaxDegreeOfParallelism;
            try
            {
                CpuKernelOptions.MaxDegreeOfParallelism = 1;
                AttentionFast.Forward(shape, q, k, v, one, lseOne);
                CpuKernelOptions.MaxDegreeOfParallelism = 4;
                AttentionFast.Forward(shape, q, k, v, many, lseMany);
            }
            finally
            {
                CpuKernelOptions.MaxDegreeOfParallelism = saved;
            }
            Assert.Equal(one, many);
            Assert.Equal(lseOne, lseMany);
        }
    }
}
