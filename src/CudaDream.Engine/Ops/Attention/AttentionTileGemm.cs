using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using CudaDream.Engine.Backends.Cpu.Kernels;

namespace CudaDream.Engine.Ops;

/// <summary>
/// C (+)= A·B for the small, cache-resident tiles inside the attention kernels (a 64×64 logit tile, a
/// 64×d output tile), without packing. A is addressed through two strides — A(i,p) = a[i·rowStride +
/// p·colStride] — so Aᵀ costs nothing (rowStride 1, colStride lda); B and C are row-major with ldb/ldc.
/// Register tiles of 6 rows × 16 columns (12 ymm accumulators: 2 loads of B and 6 broadcasts of A per
/// 12 FMAs), then 4-row, 8-column and scalar tails. Without AVX2/FMA (ARM64 AdvSimd, x64 with AVX switched off)
/// 4-row × 8-column tiles of 128-bit vectors (8 accumulators), then one-row and scalar tails.
/// </summary>
internal static unsafe class AttentionTileGemm
{
    public static void Multiply(int m, int n, int k, float* a, long aRowStride, long aColStride, float* b, int ldb, float* c, int ldc, bool accumulate)
    {
        if (!Fma.IsSupported || !Avx.IsSupported)
        {
            MultiplyNarrowVectors(m, n, k, a, aRowStride, aColStride, b, ldb, c, ldc, accumulate);
            return;
        }
        int row = 0;
        int wide = n / 16 * 16;
        if (wide > 0)
            for (; row + 6 <= m; row += 6)
            {
                float* a6 = a + row * aRowStride, c6 = c + (long)row * ldc;
                SixRowsWide(wide, k, a6, aRowStride, aColStride, b, ldb, c6, ldc, accumulate);
                if (wide == n) continue;
                // Columns past the last 16-wide block.
                FourRows(n - wide, k, a6, aRowStride, aColStride, b + wide, ldb, c6 + wide, ldc, accumulate);
                OneRow(n - wide, k, a6 + 4 * aRowStride, aColStride, b + wide, ldb, c6 + 4L * ldc + wide, accumulate);
                OneRow(n - wide, k, a6 + 5 * aRowStride, aColStride, b + wide, ldb, c6 + 5L * ldc + wide, accumulate);
            }
        for (; row + 4 <= m; row += 4)
            FourRows(n, k, a + row * aRowStride, aRowStride, aColStride, b, ldb, c + (long)row * ldc, ldc, accumulate);
        for (; row < m; row++)
            OneRow(n, k, a + row * aRowStride, aColStride, b, ldb, c + (long)row * ldc, accumulate);
    }

    /// <summary>6 rows × 16-column blocks: 12 ymm accumulators, as the GEMM micro-kernel (enough independent FMA chains to hide latency).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void SixRowsWide(int n, int k, float* a, long rs, long cs, float* b, int ldb, float* c, int ldc, bool accumulate)
    {
        float* c0 = c, c1 = c + ldc, c2 = c + 2L * ldc, c3 = c + 3L * ldc, c4 = c + 4L * ldc, c5 = c + 5L * ldc;
        for (int j = 0; j + 16 <= n; j += 16)
        {
            Vector256<float> x00 = Start(c0 + j, accumulate), x01 = Start(c0 + j + 8, accumulate);
            Vector256<float> x10 = Start(c1 + j, accumulate), x11 = Start(c1 + j + 8, accumulate);
            Vector256<float> x20 = Start(c2 + j, accumulate), x21 = Start(c2 + j + 8, accumulate);
            Vector256<float> x30 = Start(c3 + j, accumulate), x31 = Start(c3 + j + 8, accumulate);
            Vector256<float> x40 = Start(c4 + j, accumulate), x41 = Start(c4 + j + 8, accumulate);
            Vector256<float> x50 = Start(c5 + j, accumulate), x51 = Start(c5 + j + 8, accumulate);
            float* bp = b + j;
            float* ap = a;
            for (int p = 0; p < k; p++, bp += ldb, ap += cs)
            {
                Vector256<float> b0 = Avx.LoadVector256(bp), b1 = Avx.LoadVector256(bp + 8);
                Vector256<float> s = Avx.BroadcastScalarToVector256(ap);
                x00 = Fma.MultiplyAdd(s, b0, x00); x01 = Fma.MultiplyAdd(s, b1, x01);
                s = Avx.BroadcastScalarToVector256(ap + rs);
                x10 = Fma.MultiplyAdd(s, b0, x10); x11 = Fma.MultiplyAdd(s, b1, x11);
                s = Avx.BroadcastScalarToVector256(ap + 2 * rs);
                x20 = Fma.MultiplyAdd(s, b0, x20); x21 = Fma.MultiplyAdd(s, b1, x21);
                s = Avx.BroadcastScalarToVector256(ap + 3 * rs);
                x30 = Fma.MultiplyAdd(s, b0, x30); x31 = Fma.MultiplyAdd(s, b1, x31);
                s = Avx.BroadcastScalarToVector256(ap + 4 * rs);
                x40 = Fma.MultiplyAdd(s, b0, x40); x41 = Fma.MultiplyAdd(s, b1, x41);
                s = Avx.BroadcastScalarToVector256(ap + 5 * rs);
                x50 = Fma.MultiplyAdd(s, b0, x50); x51 = Fma.MultiplyAdd(s, b1, x51);
            }
            Avx.Store(c0 + j, x00); Avx.Store(c0 + j + 8, x01);
            Avx.Store(c1 + j, x10); Avx.Store(c1 + j + 8, x11);
            Avx.Store(c2 + j, x20); Avx.Store(c2 + j + 8, x21);
            Avx.Store(c3 + j, x30); Avx.Store(c3 + j + 8, x31);
            Avx.Store(c4 + j, x40); Avx.Store(c4 + j + 8, x41);
            Avx.Store(c5 + j, x50); Avx.Store(c5 + j + 8, x51);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Start(float* c, bool accumulate) => accumulate ? Avx.LoadVector256(c) : Vector256<float>.Zero;

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void FourRows(int n, int k, float* a, long rs, long cs, float* b, int ldb, float* c, int ldc, bool accumulate)
    {
        float* c0 = c, c1 = c + ldc, c2 = c + 2L * ldc, c3 = c + 3L * ldc;
        int j = 0;
        for (; j + 16 <= n; j += 16)
        {
            Vector256<float> x00 = Start(c0 + j, accumulate), x01 = Start(c0 + j + 8, accumulate);
            Vector256<float> x10 = Start(c1 + j, accumulate), x11 = Start(c1 + j + 8, accumulate);
            Vector256<float> x20 = Start(c2 + j, accumulate), x21 = Start(c2 + j + 8, accumulate);
            Vector256<float> x30 = Start(c3 + j, accumulate), x31 = Start(c3 + j + 8, accumulate);
            float* bp = b + j;
            float* ap = a;
            for (int p = 0; p < k; p++, bp += ldb, ap += cs)
            {
                Vector256<float> b0 = Avx.LoadVector256(bp), b1 = Avx.LoadVector256(bp + 8);
                Vector256<float> s = Avx.BroadcastScalarToVector256(ap);
                x00 = Fma.MultiplyAdd(s, b0, x00); x01 = Fma.MultiplyAdd(s, b1, x01);
                s = Avx.BroadcastScalarToVector256(ap + rs);
                x10 = Fma.MultiplyAdd(s, b0, x10); x11 = Fma.MultiplyAdd(s, b1, x11);
                s = Avx.BroadcastScalarToVector256(ap + 2 * rs);
                x20 = Fma.MultiplyAdd(s, b0, x20); x21 = Fma.MultiplyAdd(s, b1, x21);
                s = Avx.BroadcastScalarToVector256(ap + 3 * rs);
                x30 = Fma.MultiplyAdd(s, b0, x30); x31 = Fma.MultiplyAdd(s, b1, x31);
            }
            Avx.Store(c0 + j, x00); Avx.Store(c0 + j + 8, x01);
            Avx.Store(c1 + j, x10); Avx.Store(c1 + j + 8, x11);
            Avx.Store(c2 + j, x20); Avx.Store(c2 + j + 8, x21);
            Avx.Store(c3 + j, x30); Avx.Store(c3 + j + 8, x31);
        }
        for (; j + 8 <= n; j += 8)
        {
            Vector256<float> x0 = Start(c0 + j, accumulate), x1 = Start(c1 + j, accumulate);
            Vector256<float> x2 = Start(c2 + j, accumulate), x3 = Start(c3 + j, accumulate);
            float* bp = b + j;
            float* ap = a;
            for (int p = 0; p < k; p++, bp += ldb, ap += cs)
            {
                Vector256<float> b0 = Avx.LoadVector256(bp);
                x0 = Fma.MultiplyAdd(Avx.BroadcastScalarToVector256(ap), b0, x0);
                x1 = Fma.MultiplyAdd(Avx.BroadcastScalarToVector256(ap + rs), b0, x1);
                x2 = Fma.MultiplyAdd(Avx.BroadcastScalarToVector256(ap + 2 * rs), b0, x2);
                x3 = Fma.MultiplyAdd(Avx.BroadcastScalarToVector256(ap + 3 * rs), b0, x3);
            }
            Avx.Store(c0 + j, x0); Avx.Store(c1 + j, x1); Avx.Store(c2 + j, x2); Avx.Store(c3 + j, x3);
        }
        for (; j < n; j++)
        {
            float s0 = accumulate ? c0[j] : 0f, s1 = accumulate ? c1[j] : 0f, s2 = accumulate ? c2[j] : 0f, s3 = accumulate ? c3[j] : 0f;
            float* bp = b + j;
            float* ap = a;
            for (int p = 0; p < k; p++, bp += ldb, ap += cs)
            {
                float bv = *bp;
                s0 += ap[0] * bv; s1 += ap[rs] * bv; s2 += ap[2 * rs] * bv; s3 += ap[3 * rs] * bv;
            }
            c0[j] = s0; c1[j] = s1; c2[j] = s2; c3[j] = s3;
        }
    }

    private static void OneRow(int n, int k, float* a, long cs, float* b, int ldb, float* c, bool accumulate)
    {
        int j = 0;
        for (; j + 8 <= n; j += 8)
        {
            Vector256<float> x = Start(c + j, accumulate);
            float* bp = b + j;
            float* ap = a;
            for (int p = 0; p < k; p++, bp += ldb, ap += cs) x = Fma.MultiplyAdd(Avx.BroadcastScalarToVector256(ap), Avx.LoadVector256(bp), x);
            Avx.Store(c + j, x);
        }
        for (; j < n; j++)
        {
            float s = accumulate ? c[j] : 0f;
            for (int p = 0; p < k; p++) s += a[p * cs] * b[(long)p * ldb + j];
            c[j] = s;
        }
    }

    /// <summary>The 128-bit path: 4 rows × 8 columns in 8 accumulators (x64 SSE has 16 registers), then one-row and scalar tails.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void MultiplyNarrowVectors(int m, int n, int k, float* a, long rs, long cs, float* b, int ldb, float* c, int ldc, bool accumulate)
    {
        int row = 0, wide = Vector128.IsHardwareAccelerated ? n / 8 * 8 : 0;
        for (; row + 4 <= m && wide > 0; row += 4)
        {
            float* a4 = a + row * rs;
            float* c0 = c + (long)row * ldc, c1 = c0 + ldc, c2 = c1 + ldc, c3 = c2 + ldc;
            for (int j = 0; j < wide; j += 8)
            {
                Vector128<float> x00 = Start128(c0 + j, accumulate), x01 = Start128(c0 + j + 4, accumulate);
                Vector128<float> x10 = Start128(c1 + j, accumulate), x11 = Start128(c1 + j + 4, accumulate);
                Vector128<float> x20 = Start128(c2 + j, accumulate), x21 = Start128(c2 + j + 4, accumulate);
                Vector128<float> x30 = Start128(c3 + j, accumulate), x31 = Start128(c3 + j + 4, accumulate);
                float* bp = b + j;
                float* ap = a4;
                for (int p = 0; p < k; p++, bp += ldb, ap += cs)
                {
                    Vector128<float> b0 = Vector128.Load(bp), b1 = Vector128.Load(bp + 4);
                    Vector128<float> s = Vector128.Create(ap[0]);
                    x00 = Vector128.MultiplyAddEstimate(s, b0, x00); x01 = Vector128.MultiplyAddEstimate(s, b1, x01);
                    s = Vector128.Create(ap[rs]);
                    x10 = Vector128.MultiplyAddEstimate(s, b0, x10); x11 = Vector128.MultiplyAddEstimate(s, b1, x11);
                    s = Vector128.Create(ap[2 * rs]);
                    x20 = Vector128.MultiplyAddEstimate(s, b0, x20); x21 = Vector128.MultiplyAddEstimate(s, b1, x21);
                    s = Vector128.Create(ap[3 * rs]);
                    x30 = Vector128.MultiplyAddEstimate(s, b0, x30); x31 = Vector128.MultiplyAddEstimate(s, b1, x31);
                }
                x00.Store(c0 + j); x01.Store(c0 + j + 4);
                x10.Store(c1 + j); x11.Store(c1 + j + 4);
                x20.Store(c2 + j); x21.Store(c2 + j + 4);
                x30.Store(c3 + j); x31.Store(c3 + j + 4);
            }
            for (int r = 0; r < 4; r++) ScalarRow(wide, n, k, a4 + r * rs, cs, b, ldb, c + (long)(row + r) * ldc, accumulate);
        }
        for (; row < m; row++)
        {
            float* ar = a + row * rs, cr = c + (long)row * ldc;
            for (int j = 0; j < wide; j += 8)
            {
                Vector128<float> x0 = Start128(cr + j, accumulate), x1 = Start128(cr + j + 4, accumulate);
                float* bp = b + j;
                for (int p = 0; p < k; p++, bp += ldb)
                {
                    Vector128<float> s = Vector128.Create(ar[p * cs]);
                    x0 = Vector128.MultiplyAddEstimate(s, Vector128.Load(bp), x0);
                    x1 = Vector128.MultiplyAddEstimate(s, Vector128.Load(bp + 4), x1);
                }
                x0.Store(cr + j); x1.Store(cr + j + 4);
            }
            ScalarRow(wide, n, k, ar, cs, b, ldb, cr, accumulate);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<float> Start128(float* c, bool accumulate) => accumulate ? Vector128.Load(c) : Vector128<float>.Zero;

    /// <summary>Columns [from, n) of one row, scalar.</summary>
    private static void ScalarRow(int from, int n, int k, float* a, long cs, float* b, int ldb, float* c, bool accumulate)
    {
        for (int j = from; j < n; j++)
        {
            float s = accumulate ? c[j] : 0f;
            for (int p = 0; p < k; p++) s += a[p * cs] * b[(long)p * ldb + j];
            c[j] = s;
        }
    }
}
