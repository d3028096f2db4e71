using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace CudaDream.Engine.Backends.Cpu.Kernels;

/// <summary>
/// C += A·B for the small, cache-resident row-major tiles inside the attention kernels (a 64×64 logit
/// tile, a 64×d output tile): no packing, register tiles of 4 rows × 16 columns (8 ymm accumulators,
/// 2 loads of B and 4 broadcasts of A per 8 FMAs), then 8-column and scalar tails.
/// </summary>
internal static unsafe class SmallGemm
{
    public static void MultiplyAdd(int m, int n, int k, float* a, int lda, float* b, int ldb, float* c, int ldc)
    {
        if (!Fma.IsSupported || !Avx.IsSupported)
        {
            for (int i = 0; i < m; i++)
                for (int p = 0; p < k; p++)
                {
                    float aip = a[(long)i * lda + p];
                    for (int j = 0; j < n; j++) c[(long)i * ldc + j] += aip * b[(long)p * ldb + j];
                }
            return;
        }
        int row = 0;
        for (; row + 4 <= m; row += 4) FourRows(n, k, a + (long)row * lda, lda, b, ldb, c + (long)row * ldc, ldc);
        for (; row < m; row++) OneRow(n, k, a + (long)row * lda, b, ldb, c + (long)row * ldc);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void FourRows(int n, int k, float* a, int lda, float* b, int ldb, float* c, int ldc)
    {
        float* a0 = a, a1 = a + lda, a2 = a + 2L * lda, a3 = a + 3L * lda;
        float* c0 = c, c1 = c + ldc, c2 = c + 2L * ldc, c3 = c + 3L * ldc;
        int j = 0;
        for (; j + 16 <= n; j += 16)
        {
            Vector256<float> x00 = Avx.LoadVector256(c0 + j), x01 = Avx.LoadVector256(c0 + j + 8);
            Vector256<float> x10 = Avx.LoadVector256(c1 + j), x11 = Avx.LoadVector256(c1 + j + 8);
            Vector256<float> x20 = Avx.LoadVector256(c2 + j), x21 = Avx.LoadVector256(c2 + j + 8);
            Vector256<float> x30 = Avx.LoadVector256(c3 + j), x31 = Avx.LoadVector256(c3 + j + 8);
            float* bp = b + j;
            for (int p = 0; p < k; p++, bp += ldb)
            {
                Vector256<float> b0 = Avx.LoadVector256(bp), b1 = Avx.LoadVector256(bp + 8);
                Vector256<float> s = Avx.BroadcastScalarToVector256(a0 + p);
                x00 = Fma.MultiplyAdd(s, b0, x00); x01 = Fma.MultiplyAdd(s, b1, x01);
                s = Avx.BroadcastScalarToVector256(a1 + p);
                x10 = Fma.MultiplyAdd(s, b0, x10); x11 = Fma.MultiplyAdd(s, b1, x11);
                s = Avx.BroadcastScalarToVector256(a2 + p);
                x20 = Fma.MultiplyAdd(s, b0, x20); x21 = Fma.MultiplyAdd(s, b1, x21);
                s = Avx.BroadcastScalarToVector256(a3 + p);
                x30 = Fma.MultiplyAdd(s, b0, x30); x31 = Fma.MultiplyAdd(s, b1, x31);
            }
            Avx.Store(c0 + j, x00); Avx.Store(c0 + j + 8, x01);
            Avx.Store(c1 + j, x10); Avx.Store(c1 + j + 8, x11);
            Avx.Store(c2 + j, x20); Avx.Store(c2 + j + 8, x21);
            Avx.Store(c3 + j, x30); Avx.Store(c3 + j + 8, x31);
        }
        for (; j + 8 <= n; j += 8)
        {
            Vector256<float> x0 = Avx.LoadVector256(c0 + j), x1 = Avx.LoadVector256(c1 + j);
            Vector256<float> x2 = Avx.LoadVector256(c2 + j), x3 = Avx.LoadVector256(c3 + j);
            float* bp = b + j;
            for (int p = 0; p < k; p++, bp += ldb)
            {
                Vector256<float> b0 = Avx.LoadVector256(bp);
                x0 = Fma.MultiplyAdd(Avx.BroadcastScalarToVector256(a0 + p), b0, x0);
                x1 = Fma.MultiplyAdd(Avx.BroadcastScalarToVector256(a1 + p), b0, x1);
                x2 = Fma.MultiplyAdd(Avx.BroadcastScalarToVector256(a2 + p), b0, x2);
                x3 = Fma.MultiplyAdd(Avx.BroadcastScalarToVector256(a3 + p), b0, x3);
            }
            Avx.Store(c0 + j, x0); Avx.Store(c1 + j, x1); Avx.Store(c2 + j, x2); Avx.Store(c3 + j, x3);
        }
        for (; j < n; j++)
        {
            float s0 = c0[j], s1 = c1[j], s2 = c2[j], s3 = c3[j];
            float* bp = b + j;
            for (int p = 0; p < k; p++, bp += ldb)
            {
                float bv = *bp;
                s0 += a0[p] * bv; s1 += a1[p] * bv; s2 += a2[p] * bv; s3 += a3[p] * bv;
            }
            c0[j] = s0; c1[j] = s1; c2[j] = s2; c3[j] = s3;
        }
    }

    private static void OneRow(int n, int k, float* a, float* b, int ldb, float* c)
    {
        int j = 0;
        for (; j + 8 <= n; j += 8)
        {
            Vector256<float> x = Avx.LoadVector256(c + j);
            float* bp = b + j;
            for (int p = 0; p < k; p++, bp += ldb) x = Fma.MultiplyAdd(Avx.BroadcastScalarToVector256(a + p), Avx.LoadVector256(bp), x);
            Avx.Store(c + j, x);
        }
        for (; j < n; j++)
        {
            float s = c[j];
            for (int p = 0; p < k; p++) s += a[p] * b[(long)p * ldb + j];
            c[j] = s;
        }
    }
}
