using System.Buffers;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace CudaDream.Engine.Backends.Cpu.Kernels;

/// <summary>
/// Scaled dot-product attention for narrow heads (d, dv ≤ <see cref="MaxWidth"/>), the contract of
/// <see cref="AttentionReference"/>. With a head only a few floats wide, a query–key pair costs a few
/// multiply-adds but one exponential, and the tiled kernel (<see cref="AttentionFast"/>) spends its time in GEMMs
/// whose depth or width is a fraction of a vector and in the passes over each logit tile. Here the key axis is the
/// vector axis: Kᵀ and Vᵀ are laid out once per head as [width][M] rows padded to 8, and each query row is
/// done in registers — the logits of 8 keys are d broadcast-FMAs, e^x is <see cref="FloatExp"/>.
/// Forward, per query row: logits and their max (pass 1), P = e^(s − max) and l = Σ P (pass 2),
/// O = P·V / l and lse = max + log l (pass 3). Backward, per query row, the FlashAttention-2 recurrences
/// (Dao 2023, Algorithm 2) in one pass over the keys: P = e^(scale·q·k − lse), dP = dO·Vᵀ,
/// dS = scale·P ⊙ (dP − D) with D = dO·O, dVᵀ += dO ⊗ P and dKᵀ += q ⊗ dS accumulated per key lane,
/// then dQ = dS·K. Tasks are (head, static block of query rows); with more than one block per head each
/// block accumulates dK, dV in its own buffer and the buffers are added in block order, so the result
/// depends on the sizes and the thread setting only, never on scheduling.
/// </summary>
internal static unsafe class AttentionNarrow
{
    /// <summary>
    /// Widest head handled here. From 8 floats on, the tiled kernel's register-blocked GEMMs fill whole vectors
    /// and win (tiny UNet, one thread: at d = 8 the backward takes 0.9 ms tiled against 1.7 ms here; at d = 4 it
    /// takes 1.8 ms tiled against 0.9 ms here, the GEMMs' column tails being scalar).
    /// </summary>
    public const int MaxWidth = 7;
    private const int Lanes = 8;

    /// <summary>Pairs·(d + dv + 16) below this are not worth waking a second thread for.</summary>
    private const long ParallelThreshold = 1 << 18;

    public static bool Handles(in AttentionShape a) => FloatExp.IsSupported && a.HeadDim <= MaxWidth && a.ValueDim <= MaxWidth;

    private static int Padded(int length) => (length + Lanes - 1) / Lanes * Lanes;

    /// <summary>Raw pointers (spans cannot be captured by the parallel bodies). KT/VT: [B·H][width][padded M].</summary>
    private readonly record struct Tensors(nint Q, nint K, nint V, nint O, nint Lse, nint KT, nint VT, nint DOut, nint DQ, nint DK, nint DV);

    /// <summary>o [B,N,H,Dv]; lse [B,H,N] unless null. Extents already checked.</summary>
    public static void Forward(in AttentionShape a, float* q, float* k, float* v, float* o, float* lse)
    {
        int heads = a.Batch * a.Heads, mp = Padded(a.KeyLength);
        float[] kt = ArrayPool<float>.Shared.Rent(checked(heads * a.HeadDim * mp));
        float[] vt = ArrayPool<float>.Shared.Rent(checked(heads * a.ValueDim * mp));
        try
        {
            fixed (float* pkt = kt, pvt = vt)
            {
                bool parallel = IsParallel(a);
                TransposePerHead(a, k, a.HeadDim, pkt, parallel);
                TransposePerHead(a, v, a.ValueDim, pvt, parallel);
                var t = new Tensors((nint)q, (nint)k, (nint)v, (nint)o, (nint)lse, (nint)pkt, (nint)pvt, 0, 0, 0, 0);
                var shape = a;
                int blocks = RowBlocks(a, parallel);
                For(heads * blocks, parallel, task =>
                {
                    var (first, end) = BlockRows(shape.QueryLength, blocks, task % blocks);
                    WithRowBuffer(mp, row => ForwardRows(shape, t, task / blocks, first, end, row));
                });
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(kt);
            ArrayPool<float>.Shared.Return(vt);
        }
    }

    /// <summary>dq, dk, dv (overwritten) from the forward's o and lse. Extents already checked.</summary>
    public static void Backward(in AttentionShape a, float* q, float* k, float* v, float* o, float* lse, float* dout, float* dq, float* dk, float* dv)
    {
        int heads = a.Batch * a.Heads, mp = Padded(a.KeyLength), d = a.HeadDim, dvDim = a.ValueDim;
        bool parallel = IsParallel(a);
        int blocks = RowBlocks(a, parallel);
        int partial = (d + dvDim) * mp; // one task's dKᵀ and dVᵀ
        float[] kt = ArrayPool<float>.Shared.Rent(checked(heads * d * mp));
        float[] vt = ArrayPool<float>.Shared.Rent(checked(heads * dvDim * mp));
        float[] partials = ArrayPool<float>.Shared.Rent(checked(heads * blocks * partial));
        try
        {
            fixed (float* pkt = kt, pvt = vt, pPartials = partials)
            {
                TransposePerHead(a, k, d, pkt, parallel);
                TransposePerHead(a, v, dvDim, pvt, parallel);
                var t = new Tensors((nint)q, (nint)k, (nint)v, (nint)o, (nint)lse, (nint)pkt, (nint)pvt, (nint)dout, (nint)dq, (nint)dk, (nint)dv);
                var shape = a;
                nint partialBase = (nint)pPartials;
                For(heads * blocks, parallel, task =>
                {
                    float* dkt = (float*)partialBase + (long)task * partial, dvt = dkt + d * mp;
                    new Span<float>(dkt, partial).Clear();
                    var (first, end) = BlockRows(shape.QueryLength, blocks, task % blocks);
                    WithRowBuffer(mp, row => BackwardRows(shape, t, task / blocks, first, end, dkt, dvt, row));
                });
                For(heads, parallel, head => WriteKeyGradients(shape, t, head, blocks, (float*)partialBase + (long)head * blocks * partial));
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(kt);
            ArrayPool<float>.Shared.Return(vt);
            ArrayPool<float>.Shared.Return(partials);
        }
    }

    private static bool IsParallel(in AttentionShape a) =>
        CpuKernelOptions.MaxDegreeOfParallelism > 1
        && (long)a.Batch * a.Heads * a.QueryLength * a.KeyLength * (a.HeadDim + a.ValueDim + 16) >= ParallelThreshold;

    /// <summary>Query blocks per head: one when there are heads enough for every thread, else enough blocks to occupy them.</summary>
    private static int RowBlocks(in AttentionShape a, bool parallel)
    {
        int heads = a.Batch * a.Heads, degree = CpuKernelOptions.MaxDegreeOfParallelism;
        if (!parallel || heads >= degree) return 1;
        return Math.Clamp((degree + heads - 1) / heads, 1, Math.Max(1, a.QueryLength / 16));
    }

    private static (int First, int End) BlockRows(int rows, int blocks, int block) =>
        ((int)((long)rows * block / blocks), (int)((long)rows * (block + 1) / blocks));

    private static void For(int count, bool parallel, Action<int> body)
    {
        if (parallel && count > 1)
            Parallel.For(0, count, CpuKernelOptions.ParallelOptions(CpuKernelOptions.MaxDegreeOfParallelism), body);
        else
            for (int i = 0; i < count; i++) body(i);
    }

    private delegate void RowBody(float* row);

    /// <summary>A scratch row of the padded key length: on the stack when small, pooled otherwise.</summary>
    private static void WithRowBuffer(int length, RowBody body)
    {
        float[]? rented = null;
        Span<float> buffer = length <= 4096 ? stackalloc float[length] : (rented = ArrayPool<float>.Shared.Rent(length));
        try
        {
            fixed (float* row = buffer) body(row);
        }
        finally
        {
            if (rented != null) ArrayPool<float>.Shared.Return(rented);
        }
    }

    /// <summary>dst[head][e][j] = src[b, j, h, e] for j &lt; M, 0 for the padding up to a multiple of 8.</summary>
    private static void TransposePerHead(in AttentionShape a, float* src, int width, float* dst, bool parallel)
    {
        int m = a.KeyLength, mp = Padded(m), heads = a.Heads;
        nint s = (nint)src, d = (nint)dst;
        For(a.Batch * heads, parallel, head =>
        {
            int b = head / heads, h = head % heads;
            float* tile = (float*)d + (long)head * width * mp;
            float* from = (float*)s + ((long)b * m * heads + h) * width;
            for (int j = 0; j < m; j++, from += (long)heads * width)
                for (int e = 0; e < width; e++) tile[(long)e * mp + j] = from[e];
            for (int e = 0; e < width; e++) new Span<float>(tile + (long)e * mp + m, mp - m).Clear();
        });
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ForwardRows(in AttentionShape a, in Tensors t, int head, int first, int end, float* row)
    {
        int b = head / a.Heads, h = head % a.Heads, d = a.HeadDim, dv = a.ValueDim, n = a.QueryLength, mp = Padded(a.KeyLength);
        float* kt = (float*)t.KT + (long)head * d * mp, vt = (float*)t.VT + (long)head * dv * mp;
        float* lse = (float*)t.Lse;
        var scale = Vector256.Create((float)a.Scale);
        for (int i = first; i < end; i++)
        {
            float* qi = (float*)t.Q + (((long)b * n + i) * a.Heads + h) * d;
            int visible = a.Causal ? i + 1 : a.KeyLength;
            int chunks = (visible + Lanes - 1) / Lanes;
            var lastMask = VisibleLanes(visible - (chunks - 1) * Lanes);

            var max = Vector256.Create(float.NegativeInfinity);
            for (int c = 0; c < chunks; c++)
            {
                var s = Avx.Multiply(Combine(qi, kt + c * Lanes, mp, d), scale);
                if (c == chunks - 1) s = Avx.BlendVariable(Vector256.Create(float.NegativeInfinity), s, lastMask);
                Avx.Store(row + c * Lanes, s);
                max = Avx.Max(max, s);
            }
            float rowMax = HorizontalMax(max);

            var shift = Vector256.Create(rowMax);
            var sum = Vector256<float>.Zero;
            for (int c = 0; c < chunks; c++)
            {
                var pr = FloatExp.Exp(Avx.Subtract(Avx.LoadVector256(row + c * Lanes), shift));
                Avx.Store(row + c * Lanes, pr);
                sum = Avx.Add(sum, pr);
            }
            float l = Vector256.Sum(sum);

            float* oi = (float*)t.O + (((long)b * n + i) * a.Heads + h) * dv;
            RowTimesColumns(row, chunks, vt, mp, dv, l > 0 ? 1f / l : 0f, oi);
            if (lse != null) lse[(long)head * n + i] = l > 0 ? rowMax + MathF.Log(l) : float.NegativeInfinity;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void BackwardRows(in AttentionShape a, in Tensors t, int head, int first, int end, float* dkt, float* dvt, float* row)
    {
        int b = head / a.Heads, h = head % a.Heads, d = a.HeadDim, dvDim = a.ValueDim, n = a.QueryLength, mp = Padded(a.KeyLength);
        float* kt = (float*)t.KT + (long)head * d * mp, vt = (float*)t.VT + (long)head * dvDim * mp;
        float* lse = (float*)t.Lse + (long)head * n;
        var scale = Vector256.Create((float)a.Scale);
        for (int i = first; i < end; i++)
        {
            long rowIndex = ((long)b * n + i) * a.Heads + h;
            float* qi = (float*)t.Q + rowIndex * d, dqi = (float*)t.DQ + rowIndex * d;
            float* oi = (float*)t.O + rowIndex * dvDim, doi = (float*)t.DOut + rowIndex * dvDim;
            float l = lse[i];
            if (float.IsNegativeInfinity(l))
            {
                new Span<float>(dqi, d).Clear(); // the row saw no key: it has no gradient
                continue;
            }
            float rowDot = 0f; // D_i = dO_i·O_i
            for (int e = 0; e < dvDim; e++) rowDot += doi[e] * oi[e];
            int visible = a.Causal ? i + 1 : a.KeyLength;
            int chunks = (visible + Lanes - 1) / Lanes;
            var lastMask = VisibleLanes(visible - (chunks - 1) * Lanes);
            var negLse = Vector256.Create(-l);
            var dot = Vector256.Create(rowDot);

            for (int c = 0; c < chunks; c++)
            {
                long lane = c * Lanes;
                var pr = FloatExp.Exp(Fma.MultiplyAdd(Combine(qi, kt + lane, mp, d), scale, negLse));
                if (c == chunks - 1) pr = Avx.BlendVariable(Vector256<float>.Zero, pr, lastMask);
                var dp = Combine(doi, vt + lane, mp, dvDim);
                var ds = Avx.Multiply(Avx.Multiply(scale, pr), Avx.Subtract(dp, dot));
                Avx.Store(row + lane, ds);
                AddScaled(dvt + lane, mp, dvDim, pr, doi);
                AddScaled(dkt + lane, mp, d, ds, qi);
            }
            RowTimesColumns(row, chunks, kt, mp, d, 1f, dqi); // dQ_i = dS_i·K
        }
    }

    /// <summary>Sums the blocks' dKᵀ, dVᵀ of one head in block order and writes them to dk, dv in [B, M, H, width].</summary>
    private static void WriteKeyGradients(in AttentionShape a, in Tensors t, int head, int blocks, float* partials)
    {
        int b = head / a.Heads, h = head % a.Heads, d = a.HeadDim, dvDim = a.ValueDim, m = a.KeyLength, mp = Padded(m);
        int partial = (d + dvDim) * mp;
        for (int block = 1; block < blocks; block++)
        {
            var total = new Span<float>(partials, partial);
            System.Numerics.Tensors.TensorPrimitives.Add(total, new ReadOnlySpan<float>(partials + (long)block * partial, partial), total);
        }
        float* dkt = partials, dvt = partials + d * mp;
        for (int j = 0; j < m; j++)
        {
            long key = ((long)b * m + j) * a.Heads + h;
            float* dkj = (float*)t.DK + key * d, dvj = (float*)t.DV + key * dvDim;
            for (int p = 0; p < d; p++) dkj[p] = dkt[(long)p * mp + j];
            for (int e = 0; e < dvDim; e++) dvj[e] = dvt[(long)e * mp + j];
        }
    }

    /// <summary>out[e] = factor · Σ_j row[j]·columns[e][j] over the first chunks·8 lanes, four columns at a time.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void RowTimesColumns(float* row, int chunks, float* columns, int stride, int count, float factor, float* output)
    {
        int e = 0;
        for (; e + 4 <= count; e += 4)
        {
            float* c0 = columns + (long)e * stride, c1 = c0 + stride, c2 = c1 + stride, c3 = c2 + stride;
            Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
            for (int c = 0; c < chunks; c++)
            {
                int lane = c * Lanes;
                var r = Avx.LoadVector256(row + lane);
                a0 = Fma.MultiplyAdd(r, Avx.LoadVector256(c0 + lane), a0);
                a1 = Fma.MultiplyAdd(r, Avx.LoadVector256(c1 + lane), a1);
                a2 = Fma.MultiplyAdd(r, Avx.LoadVector256(c2 + lane), a2);
                a3 = Fma.MultiplyAdd(r, Avx.LoadVector256(c3 + lane), a3);
            }
            output[e] = Vector256.Sum(a0) * factor;
            output[e + 1] = Vector256.Sum(a1) * factor;
            output[e + 2] = Vector256.Sum(a2) * factor;
            output[e + 3] = Vector256.Sum(a3) * factor;
        }
        for (; e < count; e++)
        {
            float* c0 = columns + (long)e * stride;
            Vector256<float> a0 = default;
            for (int c = 0; c < chunks; c++) a0 = Fma.MultiplyAdd(Avx.LoadVector256(row + c * Lanes), Avx.LoadVector256(c0 + c * Lanes), a0);
            output[e] = Vector256.Sum(a0) * factor;
        }
    }

    /// <summary>Σ_p scalars[p]·rows[p·stride .. +8), unrolled by four into two accumulators (short loops are all overhead otherwise).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Combine(float* scalars, float* rows, int stride, int count)
    {
        Vector256<float> s0 = default, s1 = default;
        int p = 0;
        for (; p + 4 <= count; p += 4, rows += 4 * stride)
        {
            s0 = Fma.MultiplyAdd(Vector256.Create(scalars[p]), Avx.LoadVector256(rows), s0);
            s1 = Fma.MultiplyAdd(Vector256.Create(scalars[p + 1]), Avx.LoadVector256(rows + stride), s1);
            s0 = Fma.MultiplyAdd(Vector256.Create(scalars[p + 2]), Avx.LoadVector256(rows + 2 * stride), s0);
            s1 = Fma.MultiplyAdd(Vector256.Create(scalars[p + 3]), Avx.LoadVector256(rows + 3 * stride), s1);
        }
        for (; p < count; p++, rows += stride) s0 = Fma.MultiplyAdd(Vector256.Create(scalars[p]), Avx.LoadVector256(rows), s0);
        return Avx.Add(s0, s1);
    }

    /// <summary>rows[p·stride .. +8) += v·scalars[p] for p &lt; count, unrolled by four.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void AddScaled(float* rows, int stride, int count, Vector256<float> v, float* scalars)
    {
        int p = 0;
        for (; p + 4 <= count; p += 4, rows += 4 * stride)
        {
            float* r1 = rows + stride, r2 = r1 + stride, r3 = r2 + stride;
            Avx.Store(rows, Fma.MultiplyAdd(v, Vector256.Create(scalars[p]), Avx.LoadVector256(rows)));
            Avx.Store(r1, Fma.MultiplyAdd(v, Vector256.Create(scalars[p + 1]), Avx.LoadVector256(r1)));
            Avx.Store(r2, Fma.MultiplyAdd(v, Vector256.Create(scalars[p + 2]), Avx.LoadVector256(r2)));
            Avx.Store(r3, Fma.MultiplyAdd(v, Vector256.Create(scalars[p + 3]), Avx.LoadVector256(r3)));
        }
        for (; p < count; p++, rows += stride) Avx.Store(rows, Fma.MultiplyAdd(v, Vector256.Create(scalars[p]), Avx.LoadVector256(rows)));
    }

    /// <summary>All-ones in lanes 0..count-1.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> VisibleLanes(int count) =>
        Avx2.CompareGreaterThan(Vector256.Create(count), Vector256.Create(0, 1, 2, 3, 4, 5, 6, 7)).AsSingle();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float HorizontalMax(Vector256<float> v)
    {
        var m = Sse.Max(v.GetLower(), v.GetUpper());
        m = Sse.Max(m, Sse.Shuffle(m, m, 0b_01_00_11_10));
        m = Sse.Max(m, Sse.Shuffle(m, m, 0b_10_11_00_01));
        return m.ToScalar();
    }
}
