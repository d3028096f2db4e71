using System.Buffers;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using CudaDream.Engine.Backends.Cpu.Kernels;

namespace CudaDream.Engine.Ops;

/// <summary>
/// The GEMM of <see cref="GemmFast"/> when op(B) fits in the L2 cache (the tiny UNet's Linear and LoRA layers, its
/// convolutions as im2col GEMMs): packing A and B into panels costs as much as the product there. op(B) is used in
/// place when it is row-major with a multiple of 8 columns, otherwise copied once into a zero-padded row-major
/// scratch (transposed, alpha folded in); A is read in place through its two strides, so op(A) = Aᵀ costs nothing.
/// Register tiles of 6 rows × 16 columns (12 ymm accumulators, as the packed micro-kernel), then 6 × 8; rows past
/// m repeat the last row and are not stored, columns past n are computed on the zero padding and not stored.
/// Every element of C is the same FMA chain over k whichever tile computes it, so the static split of C's rows
/// across threads does not change any bit.
/// </summary>
internal static unsafe class GemmUnpacked
{
    private const int Rows = 6;

    /// <summary>
    /// Largest op(B), in floats after padding, taken here. With AVX2 512 KiB: measured on one thread (Zen 4, 1 MiB L2), at
    /// 4096×320×320 this path ran at 92 GFLOP/s against the 6×16 packed path's 61; past about 1 MiB of B it falls behind
    /// (512³: 70 against 93; 320×4096×2880: 12 against 76). With AVX-512 the packed path multiplies in 512-bit vectors
    /// and this one stays at 256: 128 KiB, which keeps the tiny UNet's small products here (its forward and step times
    /// were the same within the VM's noise) and sends SD 1.5's 320-wide attention projections and 8×8-plane convolutions
    /// to the packed path (SD 1.5 forward at 512 px, 2 threads: 7.8–8.1 s against 8.0–8.9 s).
    /// </summary>
    private static readonly long MaxB = CpuSimd.Width == SimdWidth.V512 ? 1 << 15 : 1 << 17;

    /// <summary>
    /// Multiply-adds below this are not worth waking a second thread for (~15 µs of work). Tiny UNet step on 2 threads:
    /// at 2^19 rather than 2^20 its convolutions take 4.4 ms instead of 5.0–5.6 ms (the 4×4 and 8×8 planes split).
    /// </summary>
    private const long ParallelThreshold = 1 << 19;

    public static bool Suits(int n, int k) => Fma.IsSupported && Avx2.IsSupported && (long)k * RoundUp8(n) <= MaxB;

    private static int RoundUp8(int n) => (n + 7) & ~7;

    /// <summary>C = alpha·op(A)·op(B) + beta·C; extents checked by the caller, alpha ≠ 0, k &gt; 0.</summary>
    public static void Run(bool transA, bool transB, int m, int n, int k, float alpha, float* a, int lda, float* b, int ldb,
        float beta, float* c, int ldc, int degree)
    {
        int paddedN = RoundUp8(n);
        bool copyB = transB || alpha != 1f || paddedN != n;
        float[]? scratch = copyB ? ArrayPool<float>.Shared.Rent(k * paddedN) : null;
        try
        {
            fixed (float* packed = scratch)
            {
                float* bRows = b;
                int bStride = ldb;
                if (copyB)
                {
                    CopyB(transB, n, k, alpha, b, ldb, packed, paddedN);
                    bRows = packed;
                    bStride = paddedN;
                }
                if (beta != 0f && beta != 1f)
                    for (int i = 0; i < m; i++)
                    {
                        var row = new Span<float>(c + (long)i * ldc, n);
                        System.Numerics.Tensors.TensorPrimitives.Multiply(row, beta, row);
                    }
                Multiply(m, n, k, a, transA ? 1 : lda, transA ? lda : 1, bRows, bStride, c, ldc, beta != 0f, degree);
            }
        }
        finally
        {
            if (scratch != null) ArrayPool<float>.Shared.Return(scratch);
        }
    }

    /// <summary>
    /// C (+)= A·B with A(i, p) = a[i·rs + p·cs] and B row-major, every row readable up to n rounded up to 8 (the
    /// columns past n are computed and not stored); rows split across threads when the product is large enough.
    /// </summary>
    public static void Multiply(int m, int n, int k, float* a, long rs, long cs, float* b, int ldb, float* c, int ldc, bool accumulate, int degree) =>
        Multiply(m, n, k, a, rs, new Strided(cs), b, new Strided(ldb), c, ldc, accumulate, degree);

    /// <summary>
    /// The same with A(i, p) = a[i·rs + aColumns[p]] and B's row p at b + bRows[p]: the im2col matrix of a padded
    /// image without building it (<see cref="ConvShifted"/>).
    /// </summary>
    public static void Multiply(int m, int n, int k, float* a, long rs, long* aColumns, float* b, long* bRows, float* c, int ldc, bool accumulate, int degree) =>
        Multiply(m, n, k, a, rs, new Table(aColumns), b, new Table(bRows), c, ldc, accumulate, degree);

    private static void Multiply<TA, TB>(int m, int n, int k, float* a, long rs, TA aColumns, float* b, TB bRows, float* c, int ldc, bool accumulate, int degree)
        where TA : struct, IOffsets where TB : struct, IOffsets
    {
        int bands = (m + Rows - 1) / Rows;
        int parts = degree > 1 && (long)m * n * k >= ParallelThreshold ? Math.Min(degree, bands) : 1;
        if (parts == 1)
            Bands(0, bands, m, n, k, a, rs, aColumns, b, bRows, c, ldc, accumulate);
        else
        {
            nint aBase = (nint)a, bBase = (nint)b, cBase = (nint)c;
            Parallel.For(0, parts, CpuKernelOptions.ParallelOptions(degree), part =>
                Bands((int)((long)bands * part / parts), (int)((long)bands * (part + 1) / parts), m, n, k,
                    (float*)aBase, rs, aColumns, (float*)bBase, bRows, (float*)cBase, ldc, accumulate));
        }
    }

    /// <summary>Offset of step p along k: of A's column (from its row start) or of B's row (from b).</summary>
    private interface IOffsets
    {
        long At(long p);
    }

    private readonly struct Strided(long stride) : IOffsets
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public long At(long p) => p * stride;
    }

    private readonly struct Table(long* offsets) : IOffsets
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public long At(long p) => offsets[p];
    }

    /// <summary>dst[p, j] = alpha·op(B)[p, j] for j &lt; n, 0 up to the padded width.</summary>
    private static void CopyB(bool transB, int n, int k, float alpha, float* b, int ldb, float* dst, int paddedN)
    {
        if (transB)
        {
            TransposeScaled(n, k, alpha, b, ldb, dst, paddedN);
            return;
        }
        for (int p = 0; p < k; p++)
        {
            float* row = dst + (long)p * paddedN;
            if (alpha == 1f)
                new ReadOnlySpan<float>(b + (long)p * ldb, n).CopyTo(new Span<float>(row, n));
            else
                System.Numerics.Tensors.TensorPrimitives.Multiply(new ReadOnlySpan<float>(b + (long)p * ldb, n), alpha, new Span<float>(row, n));
            for (int j = n; j < paddedN; j++) row[j] = 0f;
        }
    }

    /// <summary>dst[p, j] = alpha·b[j, p] (b: n rows of k), zero-padded to paddedN columns; 8×8 blocks through registers.</summary>
    private static void TransposeScaled(int n, int k, float alpha, float* b, int ldb, float* dst, int paddedN)
    {
        var scale = Vector256.Create(alpha);
        int j0 = 0;
        for (; j0 + 8 <= n; j0 += 8)
        {
            float* src = b + (long)j0 * ldb;
            int p0 = 0;
            for (; p0 + 8 <= k; p0 += 8)
                Transpose8x8(src + p0, ldb, dst + (long)p0 * paddedN + j0, paddedN, scale);
            for (int p = p0; p < k; p++)
                for (int j = 0; j < 8; j++) dst[(long)p * paddedN + j0 + j] = alpha * src[(long)j * ldb + p];
        }
        for (int p = 0; p < k; p++)
        {
            float* row = dst + (long)p * paddedN;
            for (int j = j0; j < n; j++) row[j] = alpha * b[(long)j * ldb + p];
            for (int j = n; j < paddedN; j++) row[j] = 0f;
        }
    }

    /// <summary>dst[c·ldd + r] = scale·src[r·lds + c] for an 8×8 block (the unpack/shuffle/permute transpose).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Transpose8x8(float* src, int lds, float* dst, int ldd, Vector256<float> scale)
    {
        var r0 = Avx.LoadVector256(src); var r1 = Avx.LoadVector256(src + lds);
        var r2 = Avx.LoadVector256(src + 2L * lds); var r3 = Avx.LoadVector256(src + 3L * lds);
        var r4 = Avx.LoadVector256(src + 4L * lds); var r5 = Avx.LoadVector256(src + 5L * lds);
        var r6 = Avx.LoadVector256(src + 6L * lds); var r7 = Avx.LoadVector256(src + 7L * lds);
        var t0 = Avx.UnpackLow(r0, r1); var t1 = Avx.UnpackHigh(r0, r1);
        var t2 = Avx.UnpackLow(r2, r3); var t3 = Avx.UnpackHigh(r2, r3);
        var t4 = Avx.UnpackLow(r4, r5); var t5 = Avx.UnpackHigh(r4, r5);
        var t6 = Avx.UnpackLow(r6, r7); var t7 = Avx.UnpackHigh(r6, r7);
        var u0 = Avx.Shuffle(t0, t2, 0x44); var u1 = Avx.Shuffle(t0, t2, 0xEE);
        var u2 = Avx.Shuffle(t1, t3, 0x44); var u3 = Avx.Shuffle(t1, t3, 0xEE);
        var u4 = Avx.Shuffle(t4, t6, 0x44); var u5 = Avx.Shuffle(t4, t6, 0xEE);
        var u6 = Avx.Shuffle(t5, t7, 0x44); var u7 = Avx.Shuffle(t5, t7, 0xEE);
        Avx.Store(dst, Avx.Multiply(scale, Avx.Permute2x128(u0, u4, 0x20)));
        Avx.Store(dst + ldd, Avx.Multiply(scale, Avx.Permute2x128(u1, u5, 0x20)));
        Avx.Store(dst + 2L * ldd, Avx.Multiply(scale, Avx.Permute2x128(u2, u6, 0x20)));
        Avx.Store(dst + 3L * ldd, Avx.Multiply(scale, Avx.Permute2x128(u3, u7, 0x20)));
        Avx.Store(dst + 4L * ldd, Avx.Multiply(scale, Avx.Permute2x128(u0, u4, 0x31)));
        Avx.Store(dst + 5L * ldd, Avx.Multiply(scale, Avx.Permute2x128(u1, u5, 0x31)));
        Avx.Store(dst + 6L * ldd, Avx.Multiply(scale, Avx.Permute2x128(u2, u6, 0x31)));
        Avx.Store(dst + 7L * ldd, Avx.Multiply(scale, Avx.Permute2x128(u3, u7, 0x31)));
    }

    /// <summary>Row bands [firstBand, endBand) of 6 rows each: every column block of 16, then one of 8.</summary>
    private static void Bands<TA, TB>(int firstBand, int endBand, int m, int n, int k, float* a, long rs, TA aColumns, float* b, TB bRows,
        float* c, int ldc, bool accumulate) where TA : struct, IOffsets where TB : struct, IOffsets
    {
        for (int band = firstBand; band < endBand; band++)
        {
            int i0 = band * Rows, rows = Math.Min(Rows, m - i0);
            float* aBand = a + i0 * rs;
            float* cBand = c + (long)i0 * ldc;
            // Rows past m read the band's last row again (always valid memory) and are not stored.
            long r1 = Math.Min(1, rows - 1) * rs, r2 = Math.Min(2, rows - 1) * rs, r3 = Math.Min(3, rows - 1) * rs;
            long r4 = Math.Min(4, rows - 1) * rs, r5 = Math.Min(5, rows - 1) * rs;
            var offsets = new RowOffsets(r1, r2, r3, r4, r5);
            int j = 0;
            for (; j + 16 <= n || (j + 8 < n); j += 16)
                Tile16(k, aBand, offsets, aColumns, b + j, bRows, cBand + j, ldc, rows, Math.Min(16, n - j), accumulate);
            if (j < n)
                Tile8(k, aBand, offsets, aColumns, b + j, bRows, cBand + j, ldc, rows, n - j, accumulate);
        }
    }

    private readonly record struct RowOffsets(long R1, long R2, long R3, long R4, long R5);

    /// <summary>6 rows × 16 columns (cols ≤ 16 of them stored, at least 9).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Tile16<TA, TB>(int k, float* a, in RowOffsets o, TA aColumns, float* b, TB bRows, float* c, int ldc, int rows, int cols, bool accumulate)
        where TA : struct, IOffsets where TB : struct, IOffsets
    {
        var maskHigh = ColumnMask(cols - 8);
        Vector256<float> x00 = default, x01 = default, x10 = default, x11 = default, x20 = default, x21 = default;
        Vector256<float> x30 = default, x31 = default, x40 = default, x41 = default, x50 = default, x51 = default;
        if (accumulate)
        {
            x00 = Avx.LoadVector256(c); x01 = Avx.MaskLoad(c + 8, maskHigh);
            if (rows > 1) { x10 = Avx.LoadVector256(c + ldc); x11 = Avx.MaskLoad(c + ldc + 8, maskHigh); }
            if (rows > 2) { x20 = Avx.LoadVector256(c + 2L * ldc); x21 = Avx.MaskLoad(c + 2L * ldc + 8, maskHigh); }
            if (rows > 3) { x30 = Avx.LoadVector256(c + 3L * ldc); x31 = Avx.MaskLoad(c + 3L * ldc + 8, maskHigh); }
            if (rows > 4) { x40 = Avx.LoadVector256(c + 4L * ldc); x41 = Avx.MaskLoad(c + 4L * ldc + 8, maskHigh); }
            if (rows > 5) { x50 = Avx.LoadVector256(c + 5L * ldc); x51 = Avx.MaskLoad(c + 5L * ldc + 8, maskHigh); }
        }
        float* a1 = a + o.R1, a2 = a + o.R2, a3 = a + o.R3, a4 = a + o.R4, a5 = a + o.R5;
        for (long p = 0; p < k; p++)
        {
            long ap = aColumns.At(p);
            float* row = b + bRows.At(p);
            Vector256<float> b0 = Avx.LoadVector256(row), b1 = Avx.LoadVector256(row + 8);
            var s = Vector256.Create(a[ap]);
            x00 = Fma.MultiplyAdd(s, b0, x00); x01 = Fma.MultiplyAdd(s, b1, x01);
            s = Vector256.Create(a1[ap]);
            x10 = Fma.MultiplyAdd(s, b0, x10); x11 = Fma.MultiplyAdd(s, b1, x11);
            s = Vector256.Create(a2[ap]);
            x20 = Fma.MultiplyAdd(s, b0, x20); x21 = Fma.MultiplyAdd(s, b1, x21);
            s = Vector256.Create(a3[ap]);
            x30 = Fma.MultiplyAdd(s, b0, x30); x31 = Fma.MultiplyAdd(s, b1, x31);
            s = Vector256.Create(a4[ap]);
            x40 = Fma.MultiplyAdd(s, b0, x40); x41 = Fma.MultiplyAdd(s, b1, x41);
            s = Vector256.Create(a5[ap]);
            x50 = Fma.MultiplyAdd(s, b0, x50); x51 = Fma.MultiplyAdd(s, b1, x51);
        }
        Store16(c, x00, x01, cols, maskHigh);
        if (rows > 1) Store16(c + ldc, x10, x11, cols, maskHigh);
        if (rows > 2) Store16(c + 2L * ldc, x20, x21, cols, maskHigh);
        if (rows > 3) Store16(c + 3L * ldc, x30, x31, cols, maskHigh);
        if (rows > 4) Store16(c + 4L * ldc, x40, x41, cols, maskHigh);
        if (rows > 5) Store16(c + 5L * ldc, x50, x51, cols, maskHigh);
    }

    /// <summary>6 rows × 8 columns (cols ≤ 8 of them stored).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Tile8<TA, TB>(int k, float* a, in RowOffsets o, TA aColumns, float* b, TB bRows, float* c, int ldc, int rows, int cols, bool accumulate)
        where TA : struct, IOffsets where TB : struct, IOffsets
    {
        var mask = ColumnMask(cols);
        Vector256<float> x0 = default, x1 = default, x2 = default, x3 = default, x4 = default, x5 = default;
        if (accumulate)
        {
            x0 = Avx.MaskLoad(c, mask);
            if (rows > 1) x1 = Avx.MaskLoad(c + ldc, mask);
            if (rows > 2) x2 = Avx.MaskLoad(c + 2L * ldc, mask);
            if (rows > 3) x3 = Avx.MaskLoad(c + 3L * ldc, mask);
            if (rows > 4) x4 = Avx.MaskLoad(c + 4L * ldc, mask);
            if (rows > 5) x5 = Avx.MaskLoad(c + 5L * ldc, mask);
        }
        float* a1 = a + o.R1, a2 = a + o.R2, a3 = a + o.R3, a4 = a + o.R4, a5 = a + o.R5;
        for (long p = 0; p < k; p++)
        {
            long ap = aColumns.At(p);
            var b0 = Avx.LoadVector256(b + bRows.At(p));
            x0 = Fma.MultiplyAdd(Vector256.Create(a[ap]), b0, x0);
            x1 = Fma.MultiplyAdd(Vector256.Create(a1[ap]), b0, x1);
            x2 = Fma.MultiplyAdd(Vector256.Create(a2[ap]), b0, x2);
            x3 = Fma.MultiplyAdd(Vector256.Create(a3[ap]), b0, x3);
            x4 = Fma.MultiplyAdd(Vector256.Create(a4[ap]), b0, x4);
            x5 = Fma.MultiplyAdd(Vector256.Create(a5[ap]), b0, x5);
        }
        Store8(c, x0, cols, mask);
        if (rows > 1) Store8(c + ldc, x1, cols, mask);
        if (rows > 2) Store8(c + 2L * ldc, x2, cols, mask);
        if (rows > 3) Store8(c + 3L * ldc, x3, cols, mask);
        if (rows > 4) Store8(c + 4L * ldc, x4, cols, mask);
        if (rows > 5) Store8(c + 5L * ldc, x5, cols, mask);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store16(float* c, Vector256<float> left, Vector256<float> right, int cols, Vector256<float> maskHigh)
    {
        Avx.Store(c, left);
        if (cols == 16) Avx.Store(c + 8, right);
        else Avx.MaskStore(c + 8, maskHigh, right);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store8(float* c, Vector256<float> value, int cols, Vector256<float> mask)
    {
        if (cols == 8) Avx.Store(c, value);
        else Avx.MaskStore(c, mask, value);
    }

    /// <summary>All-ones in lanes 0..count-1 (count ≥ 8: every lane).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> ColumnMask(int count) =>
        Avx2.CompareGreaterThan(Vector256.Create(count), Vector256.Create(0, 1, 2, 3, 4, 5, 6, 7)).AsSingle();
}
