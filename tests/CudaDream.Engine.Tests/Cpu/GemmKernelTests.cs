using System.Diagnostics;
using CudaDream.Engine.Backends.Cpu.Kernels;
using CudaDream.Engine.Ops;
using Xunit;
using Xunit.Abstractions;
using static CudaDream.Engine.Tests.Cpu.KernelTestSupport;

namespace CudaDream.Engine.Tests.Cpu;

public class GemmKernelTests(ITestOutputHelper output)
{
    [Fact]
    public void Reference_matches_hand_computed_product_for_every_transpose_combination()
    {
        // A = [[1,2,3],[4,5,6]] (2×3), B = [[7,8],[9,10],[11,12]] (3×2): A·B = [[58,64],[139,154]] by hand.
        double[] a = [1, 2, 3, 4, 5, 6], aT = [1, 4, 2, 5, 3, 6];
        double[] b = [7, 8, 9, 10, 11, 12], bT = [7, 9, 11, 8, 10, 12];
        double[] expected = [58, 64, 139, 154];
        foreach (bool ta in new[] { false, true })
        foreach (bool tb in new[] { false, true })
        {
            var c = new double[4];
            GemmReference.Gemm(ta, tb, 2, 2, 3, 1.0, ta ? aT : a, ta ? 2 : 3, tb ? bT : b, tb ? 3 : 2, 0.0, c, 2);
            Assert.Equal(expected, c);
        }
        // alpha, beta: C = 2·A·B + 0.5·C0
        var c2 = new double[] { 2, 4, 6, 8 };
        GemmReference.Gemm(false, false, 2, 2, 3, 2.0, a, 3, b, 2, 0.5, c2, 2);
        Assert.Equal(new double[] { 117, 130, 281, 312 }, c2);
    }

    [Fact]
    public void Beta_zero_overwrites_NaN_in_C()
    {
        var a = RandomFloats(1, 5 * 7);
        var b = RandomFloats(2, 7 * 9);
        var cRef = Enumerable.Repeat(float.NaN, 5 * 9).ToArray();
        var cFast = (float[])cRef.Clone();
        GemmReference.Gemm(false, false, 5, 9, 7, 1f, a, 7, b, 9, 0f, cRef, 9);
        GemmFast.Gemm(false, false, 5, 9, 7, 1f, a, 7, b, 9, 0f, cFast, 9);
        Assert.DoesNotContain(cRef, float.IsNaN);
        Assert.DoesNotContain(cFast, float.IsNaN);
    }

    [Theory]
    [InlineData(1, 1, 1)]
    [InlineData(7, 13, 5)]
    [InlineData(37, 45, 300)]
    [InlineData(150, 70, 517)]
    [InlineData(200, 263, 31)]
    [InlineData(6, 16, 256)]
    [InlineData(70, 300, 260)] // op(B) over 64 Ki floats: the packed path
    [InlineData(13, 1030, 70)]
    [InlineData(9, 4100, 40)] // packed, and wider than one packed slab of B (NC columns)
    public void Fast_matches_reference_with_leading_dimensions_alpha_beta(int m, int n, int k)
    {
        foreach (bool ta in new[] { false, true })
        foreach (bool tb in new[] { false, true })
        {
            int lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 1, ldc = n + 2;
            var a = RandomFloats(10 + m, (ta ? k : m) * lda);
            var b = RandomFloats(20 + n, (tb ? n : k) * ldb);
            var c0 = RandomFloats(30 + k, m * ldc);
            var expected = (float[])c0.Clone();
            var actual = (float[])c0.Clone();
            GemmReference.Gemm(ta, tb, m, n, k, 0.75f, a, lda, b, ldb, -0.5f, expected, ldc);
            GemmFast.Gemm(ta, tb, m, n, k, 0.75f, a, lda, b, ldb, -0.5f, actual, ldc);
            AssertClose(expected, actual, 1e-5, $"gemm {m}x{n}x{k} ta={ta} tb={tb}");
        }
    }

    /// <summary>
    /// The unpacked path for L2-sized op(B): column counts around its 8- and 16-wide tiles (masked tails, the LoRA
    /// rank 4), row counts around its 6-row bands, B used in place (row-major, 8k columns, alpha 1) or copied,
    /// beta 0 over NaN, 1 and other, and sizes big enough to split rows across threads.
    /// </summary>
    [Theory]
    [InlineData(1, 4, 32)]
    [InlineData(256, 4, 32)]
    [InlineData(5, 9, 3)]
    [InlineData(11, 15, 64)]
    [InlineData(256, 32, 32)]
    [InlineData(64, 16, 576)]
    [InlineData(577, 24, 64)]
    [InlineData(301, 100, 40)]
    public void Small_path_matches_reference_for_every_alpha_beta_and_transpose(int m, int n, int k)
    {
        foreach (bool ta in new[] { false, true })
        foreach (bool tb in new[] { false, true })
        foreach (float alpha in new[] { 1f, 0.75f })
        foreach (float beta in new[] { 0f, 1f, -0.5f })
        {
            int lda = ta ? m : k, ldb = tb ? k : n, ldc = n + 3;
            var a = RandomFloats(10 + m, (ta ? k : m) * lda);
            var b = RandomFloats(20 + n, (tb ? n : k) * ldb);
            var c0 = RandomFloats(30 + k, m * ldc);
            if (beta == 0f) Array.Fill(c0, float.NaN);
            var expected = (float[])c0.Clone();
            var actual = (float[])c0.Clone();
            GemmReference.Gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, expected, ldc);
            GemmFast.Gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, actual, ldc);
            for (int i = 0; i < m; i++) // the gap between rows (ldc > n) is not C's: it must be untouched
                for (int j = n; j < ldc; j++) Assert.Equal(BitConverter.SingleToInt32Bits(c0[i * ldc + j]), BitConverter.SingleToInt32Bits(actual[i * ldc + j]));
            if (beta == 0f)
                for (int i = 0; i < m; i++)
                    for (int j = n; j < ldc; j++) expected[i * ldc + j] = actual[i * ldc + j] = 0f;
            AssertClose(expected, actual, 1e-5, $"gemm {m}x{n}x{k} ta={ta} tb={tb} alpha={alpha} beta={beta}");
        }
    }

    [Fact]
    public void Fast_strided_batched_matches_reference_including_broadcast()
    {
        int m = 19, n = 23, k = 17, batch = 5;
        foreach (long strideA in new long[] { 0, m * k + 4 })
        {
            long strideB = k * n, strideC = m * n + 1;
            var a = RandomFloats(1, (int)(strideA * (batch - 1) + m * k));
            var b = RandomFloats(2, (int)(strideB * batch));
            var c0 = RandomFloats(3, (int)(strideC * batch));
            var expected = (float[])c0.Clone();
            var actual = (float[])c0.Clone();
            GemmReference.GemmStridedBatched(false, true, m, n, k, 1.5f, a, k, b, k, 1f, expected, n, batch, strideA, strideB / 1, strideC);
            GemmFast.GemmStridedBatched(false, true, m, n, k, 1.5f, a, k, b, k, 1f, actual, n, batch, strideA, strideB / 1, strideC);
            AssertClose(expected, actual, 1e-5, $"batched strideA={strideA}");
        }
    }

    [Fact]
    public void Rejects_spans_shorter_than_the_shapes_need()
    {
        var a = new float[10];
        var b = new float[12];
        var c = new float[6];
        Assert.Throws<ArgumentException>(() => GemmFast.Gemm(false, false, 2, 3, 6, 1f, a, 6, b, 3, 0f, c, 3));
        Assert.Throws<ArgumentOutOfRangeException>(() => GemmFast.Gemm(false, false, 2, 3, 4, 1f, a, 3, b, 3, 0f, c, 3));
    }

    /// <summary>
    /// The skinny AᵀB path (a LoRA factor's weight gradient: rank 4 on one side, thousands of tokens deep): either side
    /// narrow, leading dimensions wider than the matrices, alpha and beta (0 over NaN), depths that end mid-chunk; and
    /// the same bits on 1 thread as on 4 (fixed chunks, summed in order).
    /// </summary>
    [Theory]
    [InlineData(320, 4, 4096)]
    [InlineData(4, 320, 4096)]
    [InlineData(1280, 8, 700)]
    [InlineData(8, 1280, 513)]
    [InlineData(17, 3, 64)]
    [InlineData(1, 100, 1030)]
    public unsafe void Skinny_path_matches_reference_and_ignores_the_thread_count(int m, int n, int k)
    {
        Assert.True(GemmSkinny.Suits(true, false, m, n, k));
        foreach (float alpha in new[] { 1f, -0.75f })
        foreach (float beta in new[] { 0f, 1f, 0.5f })
        {
            int lda = m + 5, ldb = n + 2, ldc = n + 3;
            var a = RandomFloats(10 + m, k * lda);
            var b = RandomFloats(20 + n, k * ldb);
            var c0 = RandomFloats(30 + k, m * ldc);
            if (beta == 0f) Array.Fill(c0, float.NaN);
            var expected = (float[])c0.Clone();
            var actual = (float[])c0.Clone();
            GemmReference.Gemm(true, false, m, n, k, alpha, a, lda, b, ldb, beta, expected, ldc);
            GemmFast.Gemm(true, false, m, n, k, alpha, a, lda, b, ldb, beta, actual, ldc);
            for (int i = 0; i < m; i++) // the gap between rows (ldc > n) is not C's: it must be untouched
                for (int j = n; j < ldc; j++)
                {
                    Assert.Equal(BitConverter.SingleToInt32Bits(c0[i * ldc + j]), BitConverter.SingleToInt32Bits(actual[i * ldc + j]));
                    expected[i * ldc + j] = actual[i * ldc + j] = 0f;
                }
            AssertClose(expected, actual, 1e-5, $"skinny gemm {m}x{n}x{k} alpha={alpha} beta={beta}");

            var one = (float[])c0.Clone();
            var four = (float[])c0.Clone();
            fixed (float* pa = a, pb = b, p1 = one, p4 = four)
            {
                GemmSkinny.Run(m, n, k, alpha, pa, lda, pb, ldb, beta, p1, ldc, 1);
                GemmSkinny.Run(m, n, k, alpha, pa, lda, pb, ldb, beta, p4, ldc, 4);
            }
            Assert.Equal(one.Select(BitConverter.SingleToInt32Bits), four.Select(BitConverter.SingleToInt32Bits));
        }
        Assert.False(GemmSkinny.Suits(false, false, m, n, k));
        Assert.False(GemmSkinny.Suits(true, true, m, n, k));
    }

    [Fact]
    [Trait("Category", "Slow")]
    public void Benchmark_fast_gemm_512()
    {
        int s = 512;
        var a = RandomFloats(1, s * s);
        var b = RandomFloats(2, s * s);
        var c = new float[s * s];
        GemmFast.Gemm(false, false, s, s, s, 1f, a, s, b, s, 0f, c, s);
        foreach (bool ta in new[] { false, true })
        {
            // Best of several runs: the machine may be shared, and the best run is the kernel's speed.
            double best = double.MaxValue;
            for (int rep = 0; rep < 20; rep++)
            {
                var sw = Stopwatch.StartNew();
                GemmFast.Gemm(ta, false, s, s, s, 1f, a, s, b, s, 0f, c, s);
                best = Math.Min(best, sw.Elapsed.TotalSeconds);
            }
            output.WriteLine($"fast GEMM {s}x{s}x{s} transA={ta}: {2.0 * s * s * s / best / 1e9:F1} GFLOP/s on {CpuKernelOptions.MaxDegreeOfParallelism} threads ({Environment.ProcessorCount} cores)");
        }
    }
}
