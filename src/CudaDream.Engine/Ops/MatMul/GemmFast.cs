using System.Buffers;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using CudaDream.Engine.Backends.Cpu.Kernels;

namespace CudaDream.Engine.Ops;

/// <summary>
/// fp32 GEMM with the same contract as <see cref="GemmReference"/> (row-major, BLAS-like), organised as
/// in Goto &amp; van de Geijn, "Anatomy of High-Performance Matrix Multiplication" (ACM TOMS 2008) /
/// BLIS: C is cut into NC-column and KC-deep slabs; the KC×NC slab of op(B) is packed once into
/// NR-column panels, each MC×KC block of op(A) into MR-row panels (alpha folded in), and an MR×NR
/// register-blocked micro-kernel walks them, as wide as <see cref="CpuSimd.Width"/> allows: 6×32 in 12 zmm
/// accumulators with AVX-512, 6×16 in 12 ymm with AVX2/FMA, 6×16 in 24 128-bit registers on ARM64 AdvSimd (which has 32
/// of them; x64 SSE-only machines spill a few), scalar otherwise — all on the same packed panels. Blocks of C are
/// independent, so (row block × column chunk) tasks run in parallel on
/// <see cref="CpuKernelOptions.MaxDegreeOfParallelism"/> threads. When op(B) fits in L2, <see cref="GemmUnpacked"/> multiplies without packing; a skinny AᵀB (a LoRA factor's weight
/// gradient) goes to <see cref="GemmSkinny"/>.
/// </summary>
public static unsafe class GemmFast
{
    internal const int MR = 6, KC = 256, MC = 144;

    /// <summary>Columns of a B panel: two vectors of the chosen width (32 with AVX-512, else 16).</summary>
    internal static readonly int NR = CpuSimd.Width == SimdWidth.V512 ? 32 : 16;

    /// <summary>Columns of a packed B slab (about 4,000, a multiple of <see cref="NR"/>).</summary>
    private static readonly int NC = 4080 / NR * NR;

    /// <summary>Work below this many multiply-adds is not worth waking a second thread for.</summary>
    private const long ParallelThreshold = 1 << 18;

    public static void Gemm(bool transA, bool transB, int m, int n, int k, float alpha, ReadOnlySpan<float> a, int lda,
        ReadOnlySpan<float> b, int ldb, float beta, Span<float> c, int ldc)
    {
        GemmReference.CheckGemm(transA, transB, m, n, k, a.Length, lda, b.Length, ldb, c.Length, ldc);
        fixed (float* pa = a, pb = b, pc = c)
            Run(transA, transB, m, n, k, alpha, pa, lda, pb, ldb, beta, pc, ldc, CpuKernelOptions.MaxDegreeOfParallelism);
    }

    /// <summary>See <see cref="GemmReference.GemmStridedBatched{T}"/>: stride 0 broadcasts A or B.</summary>
    public static void GemmStridedBatched(bool transA, bool transB, int m, int n, int k, float alpha, ReadOnlySpan<float> a, int lda,
        ReadOnlySpan<float> b, int ldb, float beta, Span<float> c, int ldc, int batch, long strideA, long strideB, long strideC)
    {
        GemmReference.CheckBatched(transA, transB, m, n, k, a.Length, lda, b.Length, ldb, c.Length, ldc, batch, strideA, strideB, strideC);
        int degree = CpuKernelOptions.MaxDegreeOfParallelism;
        fixed (float* pa = a, pb = b, pc = c)
        {
            nint aBase = (nint)pa, bBase = (nint)pb, cBase = (nint)pc;
            if (batch >= degree && degree > 1 && (long)m * n * k * batch >= ParallelThreshold)
            {
                // Enough matrices to keep every thread busy: one whole GEMM per task.
                Parallel.For(0, batch, CpuKernelOptions.ParallelOptions(degree), i =>
                    Run(transA, transB, m, n, k, alpha, (float*)aBase + i * strideA, lda, (float*)bBase + i * strideB, ldb,
                        beta, (float*)cBase + i * strideC, ldc, 1));
            }
            else
            {
                for (int i = 0; i < batch; i++)
                    Run(transA, transB, m, n, k, alpha, pa + i * strideA, lda, pb + i * strideB, ldb, beta, pc + i * strideC, ldc, degree);
            }
        }
    }

    /// <summary>The GEMM on raw pointers; callers have checked the extents. Used by the convolution too.</summary>
    internal static void Run(bool transA, bool transB, int m, int n, int k, float alpha, float* a, int lda, float* b, int ldb,
        float beta, float* c, int ldc, int degree)
    {
        if (m == 0 || n == 0) return;
        if (alpha != 0f && GemmSkinny.Suits(transA, transB, m, n, k))
        {
            GemmSkinny.Run(m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, (long)m * n * k < ParallelThreshold ? 1 : degree);
            return;
        }
        if (alpha != 0f && k != 0 && GemmUnpacked.Suits(n, k))
        {
            GemmUnpacked.Run(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, degree);
            return;
        }
        ScaleC(m, n, beta, c, ldc);
        if (alpha == 0f || k == 0) return;
        if ((long)m * n * k < ParallelThreshold) degree = 1;

        float[] bPackArray = ArrayPool<float>.Shared.Rent(KC * RoundUp(Math.Min(n, NC), NR));
        try
        {
            fixed (float* bPack = bPackArray)
            {
                for (int jc = 0; jc < n; jc += NC)
                {
                    int nc = Math.Min(NC, n - jc);
                    for (int pc = 0; pc < k; pc += KC)
                    {
                        int kc = Math.Min(KC, k - pc);
                        PackB(transB, b, ldb, pc, jc, kc, nc, bPack, degree);
                        MultiplyPanels(transA, m, nc, kc, alpha, a, lda, pc, bPack, c + jc, ldc, degree);
                    }
                }
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(bPackArray);
        }
    }

    private static int RoundUp(int value, int multiple) => (value + multiple - 1) / multiple * multiple;

    private static void ScaleC(int m, int n, float beta, float* c, int ldc)
    {
        if (beta == 1f) return;
        for (int i = 0; i < m; i++)
        {
            var row = new Span<float>(c + (long)i * ldc, n);
            if (beta == 0f) row.Clear(); // overwrite: NaN in C must not survive 0·NaN
            else System.Numerics.Tensors.TensorPrimitives.Multiply(row, beta, row);
        }
    }

    /// <summary>
    /// One KC-deep slab: C[:, 0..nc) += op(A)[:, pc..pc+kc) · packed B. Tasks are (MC row block, column chunk)
    /// pairs; each packs its own A block into a pooled buffer.
    /// </summary>
    private static void MultiplyPanels(bool transA, int m, int nc, int kc, float alpha, float* a, int lda, int pc, float* bPack,
        float* c, int ldc, int degree)
    {
        int rowBlocks = (m + MC - 1) / MC;
        int panels = (nc + NR - 1) / NR;
        // Split columns only as far as needed for every thread to get ~2 tasks; a chunk keeps ≥ 4 panels
        // so re-packing A per chunk stays a small fraction of the work.
        int chunks = Math.Clamp((2 * degree + rowBlocks - 1) / rowBlocks, 1, Math.Max(1, panels / 4));
        int panelsPerChunk = (panels + chunks - 1) / chunks;
        chunks = (panels + panelsPerChunk - 1) / panelsPerChunk;
        int tasks = rowBlocks * chunks;
        nint aBase = (nint)a, bBase = (nint)bPack, cBase = (nint)c;

        void RunTask(int t)
        {
            int block = t / chunks, chunk = t % chunks;
            int ic = block * MC, mc = Math.Min(MC, m - ic);
            int firstPanel = chunk * panelsPerChunk, lastPanel = Math.Min(panels, firstPanel + panelsPerChunk);
            float[] aPackArray = ArrayPool<float>.Shared.Rent(RoundUp(MC, MR) * KC);
            try
            {
                fixed (float* aPack = aPackArray)
                {
                    PackA(transA, (float*)aBase, lda, ic, pc, mc, kc, alpha, aPack);
                    for (int panel = firstPanel; panel < lastPanel; panel++)
                    {
                        int jr = panel * NR, nr = Math.Min(NR, nc - jr);
                        float* bPanel = (float*)bBase + (long)panel * kc * NR;
                        for (int ir = 0; ir < mc; ir += MR)
                        {
                            int mr = Math.Min(MR, mc - ir);
                            float* cTile = (float*)cBase + (long)(ic + ir) * ldc + jr;
                            MicroTile(kc, aPack + (long)ir * kc, bPanel, cTile, ldc, mr, nr);
                        }
                    }
                }
            }
            finally
            {
                ArrayPool<float>.Shared.Return(aPackArray);
            }
        }

        if (degree <= 1 || tasks == 1)
            for (int t = 0; t < tasks; t++) RunTask(t);
        else
            Parallel.For(0, tasks, CpuKernelOptions.ParallelOptions(degree), RunTask);
    }

    /// <summary>Packs alpha·op(A)[ic..ic+mc, pc..pc+kc) into MR-row panels: panel p holds kc columns of MR values, zero-padded.</summary>
    private static void PackA(bool transA, float* a, int lda, int ic, int pc, int mc, int kc, float alpha, float* dst)
    {
        for (int ir = 0; ir < mc; ir += MR)
        {
            int mr = Math.Min(MR, mc - ir);
            float* panel = dst + (long)ir * kc;
            for (int p = 0; p < kc; p++)
            {
                float* col = panel + p * MR;
                for (int r = 0; r < mr; r++)
                {
                    long row = ic + ir + r, depth = pc + p;
                    col[r] = alpha * (transA ? a[depth * lda + row] : a[row * lda + depth]);
                }
                for (int r = mr; r < MR; r++) col[r] = 0f;
            }
        }
    }

    /// <summary>Packs op(B)[pc..pc+kc, jc..jc+nc) into NR-column panels: panel q holds kc rows of NR values, zero-padded.</summary>
    private static void PackB(bool transB, float* b, int ldb, int pc, int jc, int kc, int nc, float* dst, int degree)
    {
        int panels = (nc + NR - 1) / NR;
        nint bBase = (nint)b, dBase = (nint)dst;
        void PackPanel(int q)
        {
            float* src = (float*)bBase;
            float* panel = (float*)dBase + (long)q * kc * NR;
            int jr = q * NR, nr = Math.Min(NR, nc - jr);
            for (int p = 0; p < kc; p++)
            {
                float* row = panel + p * NR;
                long depth = pc + p;
                if (!transB && nr == NR)
                {
                    Unsafe.CopyBlockUnaligned(row, src + depth * ldb + jc + jr, (uint)(NR * sizeof(float)));
                    continue;
                }
                for (int j = 0; j < nr; j++)
                {
                    long col = jc + jr + j;
                    row[j] = transB ? src[col * ldb + depth] : src[depth * ldb + col];
                }
                for (int j = nr; j < NR; j++) row[j] = 0f;
            }
        }
        if (degree <= 1 || panels < 4 * degree)
            for (int q = 0; q < panels; q++) PackPanel(q);
        else
            Parallel.For(0, panels, CpuKernelOptions.ParallelOptions(degree), PackPanel);
    }

    /// <summary>C tile (mr×nr, at most MR×NR) += A panel · B panel. Partial tiles go through a scratch tile.</summary>
    private static void MicroTile(int kc, float* aPanel, float* bPanel, float* c, int ldc, int mr, int nr)
    {
        if (mr == MR && nr == NR)
        {
            MicroKernel(kc, aPanel, bPanel, c, ldc);
            return;
        }
        float* scratch = stackalloc float[MR * 32];
        new Span<float>(scratch, MR * NR).Clear();
        MicroKernel(kc, aPanel, bPanel, scratch, NR);
        for (int i = 0; i < mr; i++)
            for (int j = 0; j < nr; j++) c[(long)i * ldc + j] += scratch[i * NR + j];
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void MicroKernel(int kc, float* a, float* b, float* c, int ldc)
    {
        switch (CpuSimd.Width)
        {
            case SimdWidth.V512: MicroKernel512(kc, a, b, c, ldc); break;
            case SimdWidth.V256: MicroKernelFma(kc, a, b, c, ldc); break;
            case SimdWidth.V128: MicroKernel128(kc, a, b, c, ldc); break;
            default: MicroKernelScalar(kc, a, b, c, ldc); break;
        }
    }

    /// <summary>6×32 tile in 12 zmm accumulators; per depth step 2 loads of B, 6 broadcasts of A, 12 FMAs of 16 lanes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void MicroKernel512(int kc, float* a, float* b, float* c, int ldc)
    {
        Vector512<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default;
        Vector512<float> c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default;
        for (int p = 0; p < kc; p++)
        {
            Vector512<float> b0 = Vector512.Load(b), b1 = Vector512.Load(b + 16);
            Vector512<float> ai = Vector512.Create(a[0]);
            c00 = Avx512F.FusedMultiplyAdd(ai, b0, c00); c01 = Avx512F.FusedMultiplyAdd(ai, b1, c01);
            ai = Vector512.Create(a[1]);
            c10 = Avx512F.FusedMultiplyAdd(ai, b0, c10); c11 = Avx512F.FusedMultiplyAdd(ai, b1, c11);
            ai = Vector512.Create(a[2]);
            c20 = Avx512F.FusedMultiplyAdd(ai, b0, c20); c21 = Avx512F.FusedMultiplyAdd(ai, b1, c21);
            ai = Vector512.Create(a[3]);
            c30 = Avx512F.FusedMultiplyAdd(ai, b0, c30); c31 = Avx512F.FusedMultiplyAdd(ai, b1, c31);
            ai = Vector512.Create(a[4]);
            c40 = Avx512F.FusedMultiplyAdd(ai, b0, c40); c41 = Avx512F.FusedMultiplyAdd(ai, b1, c41);
            ai = Vector512.Create(a[5]);
            c50 = Avx512F.FusedMultiplyAdd(ai, b0, c50); c51 = Avx512F.FusedMultiplyAdd(ai, b1, c51);
            a += MR;
            b += 32;
        }
        AddRow512(c, c00, c01);
        AddRow512(c + ldc, c10, c11);
        AddRow512(c + 2L * ldc, c20, c21);
        AddRow512(c + 3L * ldc, c30, c31);
        AddRow512(c + 4L * ldc, c40, c41);
        AddRow512(c + 5L * ldc, c50, c51);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void AddRow512(float* row, Vector512<float> left, Vector512<float> right)
    {
        (Vector512.Load(row) + left).Store(row);
        (Vector512.Load(row + 16) + right).Store(row + 16);
    }

    /// <summary>
    /// 6×16 tile in 24 128-bit accumulators; per depth step 4 loads of B, 6 broadcasts of A, 24 multiply-adds
    /// (fused where the CPU has FMA: always on ARM64).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void MicroKernel128(int kc, float* a, float* b, float* c, int ldc)
    {
        Vector128<float> c00 = default, c01 = default, c02 = default, c03 = default, c10 = default, c11 = default, c12 = default, c13 = default;
        Vector128<float> c20 = default, c21 = default, c22 = default, c23 = default, c30 = default, c31 = default, c32 = default, c33 = default;
        Vector128<float> c40 = default, c41 = default, c42 = default, c43 = default, c50 = default, c51 = default, c52 = default, c53 = default;
        for (int p = 0; p < kc; p++)
        {
            Vector128<float> b0 = Vector128.Load(b), b1 = Vector128.Load(b + 4), b2 = Vector128.Load(b + 8), b3 = Vector128.Load(b + 12);
            Vector128<float> ai = Vector128.Create(a[0]);
            c00 = Vector128.MultiplyAddEstimate(ai, b0, c00); c01 = Vector128.MultiplyAddEstimate(ai, b1, c01);
            c02 = Vector128.MultiplyAddEstimate(ai, b2, c02); c03 = Vector128.MultiplyAddEstimate(ai, b3, c03);
            ai = Vector128.Create(a[1]);
            c10 = Vector128.MultiplyAddEstimate(ai, b0, c10); c11 = Vector128.MultiplyAddEstimate(ai, b1, c11);
            c12 = Vector128.MultiplyAddEstimate(ai, b2, c12); c13 = Vector128.MultiplyAddEstimate(ai, b3, c13);
            ai = Vector128.Create(a[2]);
            c20 = Vector128.MultiplyAddEstimate(ai, b0, c20); c21 = Vector128.MultiplyAddEstimate(ai, b1, c21);
            c22 = Vector128.MultiplyAddEstimate(ai, b2, c22); c23 = Vector128.MultiplyAddEstimate(ai, b3, c23);
            ai = Vector128.Create(a[3]);
            c30 = Vector128.MultiplyAddEstimate(ai, b0, c30); c31 = Vector128.MultiplyAddEstimate(ai, b1, c31);
            c32 = Vector128.MultiplyAddEstimate(ai, b2, c32); c33 = Vector128.MultiplyAddEstimate(ai, b3, c33);
            ai = Vector128.Create(a[4]);
            c40 = Vector128.MultiplyAddEstimate(ai, b0, c40); c41 = Vector128.MultiplyAddEstimate(ai, b1, c41);
            c42 = Vector128.MultiplyAddEstimate(ai, b2, c42); c43 = Vector128.MultiplyAddEstimate(ai, b3, c43);
            ai = Vector128.Create(a[5]);
            c50 = Vector128.MultiplyAddEstimate(ai, b0, c50); c51 = Vector128.MultiplyAddEstimate(ai, b1, c51);
            c52 = Vector128.MultiplyAddEstimate(ai, b2, c52); c53 = Vector128.MultiplyAddEstimate(ai, b3, c53);
            a += MR;
            b += 16;
        }
        AddRow128(c, c00, c01, c02, c03);
        AddRow128(c + ldc, c10, c11, c12, c13);
        AddRow128(c + 2L * ldc, c20, c21, c22, c23);
        AddRow128(c + 3L * ldc, c30, c31, c32, c33);
        AddRow128(c + 4L * ldc, c40, c41, c42, c43);
        AddRow128(c + 5L * ldc, c50, c51, c52, c53);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void AddRow128(float* row, Vector128<float> x0, Vector128<float> x1, Vector128<float> x2, Vector128<float> x3)
    {
        (Vector128.Load(row) + x0).Store(row);
        (Vector128.Load(row + 4) + x1).Store(row + 4);
        (Vector128.Load(row + 8) + x2).Store(row + 8);
        (Vector128.Load(row + 12) + x3).Store(row + 12);
    }

    /// <summary>6×16 tile in 12 ymm accumulators; per depth step 2 loads of B, 6 broadcasts of A, 12 FMAs.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void MicroKernelFma(int kc, float* a, float* b, float* c, int ldc)
    {
        Vector256<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default;
        Vector256<float> c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default;
        for (int p = 0; p < kc; p++)
        {
            Vector256<float> b0 = Avx.LoadVector256(b), b1 = Avx.LoadVector256(b + 8);
            Vector256<float> ai = Avx.BroadcastScalarToVector256(a);
            c00 = Fma.MultiplyAdd(ai, b0, c00); c01 = Fma.MultiplyAdd(ai, b1, c01);
            ai = Avx.BroadcastScalarToVector256(a + 1);
            c10 = Fma.MultiplyAdd(ai, b0, c10); c11 = Fma.MultiplyAdd(ai, b1, c11);
            ai = Avx.BroadcastScalarToVector256(a + 2);
            c20 = Fma.MultiplyAdd(ai, b0, c20); c21 = Fma.MultiplyAdd(ai, b1, c21);
            ai = Avx.BroadcastScalarToVector256(a + 3);
            c30 = Fma.MultiplyAdd(ai, b0, c30); c31 = Fma.MultiplyAdd(ai, b1, c31);
            ai = Avx.BroadcastScalarToVector256(a + 4);
            c40 = Fma.MultiplyAdd(ai, b0, c40); c41 = Fma.MultiplyAdd(ai, b1, c41);
            ai = Avx.BroadcastScalarToVector256(a + 5);
            c50 = Fma.MultiplyAdd(ai, b0, c50); c51 = Fma.MultiplyAdd(ai, b1, c51);
            a += MR;
            b += 16;
        }
        AddRow(c, c00, c01);
        AddRow(c + ldc, c10, c11);
        AddRow(c + 2L * ldc, c20, c21);
        AddRow(c + 3L * ldc, c30, c31);
        AddRow(c + 4L * ldc, c40, c41);
        AddRow(c + 5L * ldc, c50, c51);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void AddRow(float* row, Vector256<float> left, Vector256<float> right)
    {
        Avx.Store(row, Avx.Add(Avx.LoadVector256(row), left));
        Avx.Store(row + 8, Avx.Add(Avx.LoadVector256(row + 8), right));
    }

    private static void MicroKernelScalar(int kc, float* a, float* b, float* c, int ldc)
    {
        float* acc = stackalloc float[MR * 32];
        new Span<float>(acc, MR * NR).Clear();
        for (int p = 0; p < kc; p++, a += MR, b += NR)
            for (int i = 0; i < MR; i++)
                for (int j = 0; j < NR; j++) acc[i * NR + j] += a[i] * b[j];
        for (int i = 0; i < MR; i++)
            for (int j = 0; j < NR; j++) c[(long)i * ldc + j] += acc[i * NR + j];
    }
}
