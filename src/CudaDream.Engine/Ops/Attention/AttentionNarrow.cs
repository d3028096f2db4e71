using System.Buffers;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using CudaDream.Engine.Backends.Cpu.Kernels;

namespace CudaDream.Engine.Ops;

/// <summary>
/// Scaled dot-product attention for narrow heads (d, dv ≤ 8 forward, ≤ 7 backward), the contract of
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
    /// Widest heads handled here, forward and backward. Past them the tiled kernel's register-blocked GEMMs fill whole
    /// vectors and win. Tiny UNet shapes, one thread: at d = 8 the forward takes 0.56 ms here against 0.76 ms tiled
    /// but the backward 1.5 ms against 0.9 ms; at d = 4 the backward takes 0.76 ms here against 1.8 ms tiled (the
    /// GEMMs' column tails being scalar).
    /// </summary>
    public const int MaxForwardWidth = 8, MaxBackwardWidth = 7;
    private const int Lanes = 8;

    /// <summary>Pairs·(d + dv + 16) below this are not worth waking a second thread for.</summary>
    private const long ParallelThreshold = 1 << 18;

    public static bool HandlesForward(in AttentionShape a) => FloatExp.IsSupported && Math.Max(a.HeadDim, a.ValueDim) <= MaxForwardWidth;
    public static bool HandlesBackward(in AttentionShape a) => FloatExp.IsSupported && Math.Max(a.HeadDim, a.ValueDim) <= MaxBackwardWidth;

    private static int Padded(int length) => (length + Lanes - 1) / Lanes * Lanes;

    /// <summary>Raw pointers (spans cannot be captured by the parallel bodies). KT/VT: [B·H][width][padded M].</summary>
    private readonly record struct Tensors(nint Q, nint K, nint V, nint O, nint Lse, nint KT, nint VT, nint DOut, nint DQ, nint DK, nint DV);

    /// <summary>o [B,N,H,Dv]; lse [B,H,N] unless null. Extents already checked.</summary>
    public static void Forward(in AttentionShape a, float* q, float* k, float* v, float* o, float* lse)
    {
        if (Math.Max(a.HeadDim, a.ValueDim) <= 4) Forward<Width4>(a, q, k, v, o, lse);
        else Forward<Width8>(a, q, k, v, o, lse);
    }

    /// <summary>dq, dk, dv (overwritten) from the forward's o and lse. Extents already checked.</summary>
    public static void Backward(in AttentionShape a, float* q, float* k, float* v, float* o, float* lse, float* dout, float* dq, float* dk, float* dv)
    {
        if (Math.Max(a.HeadDim, a.ValueDim) <= 4) Backward<Width4>(a, q, k, v, o, lse, dout, dq, dk, dv);
        else Backward<Width8>(a, q, k, v, o, lse, dout, dq, dk, dv);
    }

    /// <summary>
    /// The padded width W (4 or 8) every head is treated as: Kᵀ, Vᵀ and the dKᵀ, dVᵀ accumulators have W rows, the
    /// rows past d (dv) zero, so the per-key loops are straight-line code with the query's broadcasts in registers.
    /// </summary>
    private interface IWidth { static abstract int Value { get; } }
    private readonly struct Width4 : IWidth { public static int Value => 4; }
    private readonly struct Width8 : IWidth { public static int Value => 8; }

    private static void Forward<TW>(in AttentionShape a, float* q, float* k, float* v, float* o, float* lse) where TW : struct, IWidth
    {
        int heads = a.Batch * a.Heads, mp = Padded(a.KeyLength), w = TW.Value;
        float[] kt = ArrayPool<float>.Shared.Rent(checked(heads * w * mp));
        float[] vt = ArrayPool<float>.Shared.Rent(checked(heads * w * mp));
        try
        {
            fixed (float* pkt = kt, pvt = vt)
            {
                bool parallel = IsParallel(a);
                TransposePerHead(a, k, a.HeadDim, w, pkt, parallel);
                TransposePerHead(a, v, a.ValueDim, w, pvt, parallel);
                var t = new Tensors((nint)q, (nint)k, (nint)v, (nint)o, (nint)lse, (nint)pkt, (nint)pvt, 0, 0, 0, 0);
                var shape = a;
                int blocks = RowBlocks(a, parallel);
                For(heads * blocks, parallel, task =>
                {
                    var (first, end) = BlockRows(shape.QueryLength, blocks, task % blocks);
                    WithRowBuffer(mp, row => ForwardRows<TW>(shape, t, task / blocks, first, end, row));
                });
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(kt);
            ArrayPool<float>.Shared.Return(vt);
        }
    }

    private static void Backward<TW>(in AttentionShape a, float* q, float* k, float* v, float* o, float* lse, float* dout, float* dq, float* dk, float* dv)
        where TW : struct, IWidth
    {
        int heads = a.Batch * a.Heads, mp = Padded(a.KeyLength), w = TW.Value;
        bool parallel = IsParallel(a);
        int blocks = RowBlocks(a, parallel);
        int partial = 2 * w * mp; // one task's dKᵀ and dVᵀ
        float[] kt = ArrayPool<float>.Shared.Rent(checked(heads * w * mp));
        float[] vt = ArrayPool<float>.Shared.Rent(checked(heads * w * mp));
        float[] partials = ArrayPool<float>.Shared.Rent(checked(heads * blocks * partial));
        try
        {
            fixed (float* pkt = kt, pvt = vt, pPartials = partials)
            {
                TransposePerHead(a, k, a.HeadDim, w, pkt, parallel);
                TransposePerHead(a, v, a.ValueDim, w, pvt, parallel);
                var t = new Tensors((nint)q, (nint)k, (nint)v, (nint)o, (nint)lse, (nint)pkt, (nint)pvt, (nint)dout, (nint)dq, (nint)dk, (nint)dv);
                var shape = a;
                nint partialBase = (nint)pPartials;
                For(heads * blocks, parallel, task =>
                {
                    float* dkt = (float*)partialBase + (long)task * partial, dvt = dkt + w * mp;
                    new Span<float>(dkt, partial).Clear();
                    var (first, end) = BlockRows(shape.QueryLength, blocks, task % blocks);
                    WithRowBuffer(mp, row => { for (int i = first; i < end; i++) BackwardRow<TW>(shape, t, task / blocks, i, dkt, dvt, row); });
                });
                For(heads, parallel, head => WriteKeyGradients(shape, t, head, blocks, w, (float*)partialBase + (long)head * blocks * partial));
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

    /// <summary>dst[head][e][j] = src[b, j, h, e] for e &lt; width and j &lt; M; 0 in the padding (rows up to rowCount, keys up to a multiple of 8).</summary>
    private static void TransposePerHead(in AttentionShape a, float* src, int width, int rowCount, float* dst, bool parallel)
    {
        int m = a.KeyLength, mp = Padded(m), heads = a.Heads;
        nint s = (nint)src, d = (nint)dst;
        For(a.Batch * heads, parallel, head =>
        {
            int b = head / heads, h = head % heads;
            float* tile = (float*)d + (long)head * rowCount * mp;
            float* from = (float*)s + ((long)b * m * heads + h) * width;
            for (int j = 0; j < m; j++, from += (long)heads * width)
                for (int e = 0; e < width; e++) tile[(long)e * mp + j] = from[e];
            for (int e = 0; e < width; e++) new Span<float>(tile + (long)e * mp + m, mp - m).Clear();
            new Span<float>(tile + (long)width * mp, (rowCount - width) * mp).Clear();
        });
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ForwardRows<TW>(in AttentionShape a, in Tensors t, int head, int first, int end, float* row) where TW : struct, IWidth
    {
        int b = head / a.Heads, h = head % a.Heads, d = a.HeadDim, dv = a.ValueDim, n = a.QueryLength, mp = Padded(a.KeyLength);
        float* kt = (float*)t.KT + (long)head * TW.Value * mp, vt = (float*)t.VT + (long)head * TW.Value * mp;
        float* lse = (float*)t.Lse;
        var scale = Vector256.Create((float)a.Scale);
        for (int i = first; i < end; i++)
        {
            float* qi = (float*)t.Q + (((long)b * n + i) * a.Heads + h) * d;
            var q = Broadcasts<TW>.Load(qi, d);
            int visible = a.Causal ? i + 1 : a.KeyLength;
            int chunks = (visible + Lanes - 1) / Lanes;
            var lastMask = VisibleLanes(visible - (chunks - 1) * Lanes);

            var max = Vector256.Create(float.NegativeInfinity);
            for (int c = 0; c < chunks; c++)
            {
                var s = Avx.Multiply(q.Dot(kt + c * Lanes, mp), scale);
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

    /// <summary>The state of one query row in the backward: its broadcasts, −lse, D = dO·O and where its keys end.</summary>
    private readonly struct BackwardQuery<TW> where TW : struct, IWidth
    {
        public readonly Broadcasts<TW> Q, DOut;
        public readonly Vector256<float> NegLse, RowDot;
        public readonly int Visible;
        public readonly float* DQ;

        public BackwardQuery(in AttentionShape a, in Tensors t, int head, int i)
        {
            int b = head / a.Heads, h = head % a.Heads;
            long rowIndex = ((long)b * a.QueryLength + i) * a.Heads + h;
            float* qi = (float*)t.Q + rowIndex * a.HeadDim;
            float* oi = (float*)t.O + rowIndex * a.ValueDim, doi = (float*)t.DOut + rowIndex * a.ValueDim;
            float rowDot = 0f;
            for (int e = 0; e < a.ValueDim; e++) rowDot += doi[e] * oi[e];
            Q = Broadcasts<TW>.Load(qi, a.HeadDim);
            DOut = Broadcasts<TW>.Load(doi, a.ValueDim);
            NegLse = Vector256.Create(-((float*)t.Lse)[(long)head * a.QueryLength + i]);
            RowDot = Vector256.Create(rowDot);
            Visible = a.Causal ? i + 1 : a.KeyLength;
            DQ = (float*)t.DQ + rowIndex * a.HeadDim;
        }

        /// <summary>P and scale·dS of this row for the 8 keys at lane (0 past the visible keys).</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public (Vector256<float> P, Vector256<float> DS) Chunk(float* kt, float* vt, int mp, int lane, Vector256<float> scale)
        {
            var pr = FloatExp.Exp(Fma.MultiplyAdd(Q.Dot(kt + lane, mp), scale, NegLse));
            if (lane + Lanes > Visible) pr = Avx.BlendVariable(Vector256<float>.Zero, pr, VisibleLanes(Visible - lane));
            return (pr, Avx.Multiply(Avx.Multiply(scale, pr), Avx.Subtract(DOut.Dot(vt + lane, mp), RowDot)));
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void BackwardRow<TW>(in AttentionShape a, in Tensors t, int head, int i, float* dkt, float* dvt, float* row)
        where TW : struct, IWidth
    {
        int mp = Padded(a.KeyLength);
        float* kt = (float*)t.KT + (long)head * TW.Value * mp, vt = (float*)t.VT + (long)head * TW.Value * mp;
        var query = new BackwardQuery<TW>(a, t, head, i);
        if (float.IsNegativeInfinity(-query.NegLse.ToScalar()))
        {
            new Span<float>(query.DQ, a.HeadDim).Clear(); // the row saw no key: it has no gradient
            return;
        }
        var scale = Vector256.Create((float)a.Scale);
        int chunks = (query.Visible + Lanes - 1) / Lanes;
        for (int c = 0; c < chunks; c++)
        {
            int lane = c * Lanes;
            var (pr, ds) = query.Chunk(kt, vt, mp, lane, scale);
            Avx.Store(row + lane, ds);
            query.DOut.AddScaledTo(dvt + lane, mp, pr);
            query.Q.AddScaledTo(dkt + lane, mp, ds);
        }
        RowTimesColumns(row, chunks, kt, mp, a.HeadDim, 1f, query.DQ); // dQ_i = dS_i·K
    }

    /// <summary>
    /// A query's (or output gradient's) W elements broadcast to vectors, zero past the real width, so that the
    /// per-key loops of W = 4 or 8 rows are straight-line code on registers.
    /// </summary>
    private readonly struct Broadcasts<TW> where TW : struct, IWidth
    {
        private readonly Vector256<float> _v0, _v1, _v2, _v3, _v4, _v5, _v6, _v7;

        private Broadcasts(float* x, int width)
        {
            _v0 = At(x, 0, width); _v1 = At(x, 1, width); _v2 = At(x, 2, width); _v3 = At(x, 3, width);
            if (TW.Value == 8) { _v4 = At(x, 4, width); _v5 = At(x, 5, width); _v6 = At(x, 6, width); _v7 = At(x, 7, width); }
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Broadcasts<TW> Load(float* x, int width) => new(x, width);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private static Vector256<float> At(float* x, int e, int width) => e < width ? Vector256.Create(x[e]) : Vector256<float>.Zero;

        /// <summary>Σ_e v_e·rows[e·stride .. +8), two accumulators.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public Vector256<float> Dot(float* rows, int stride)
        {
            var s0 = Avx.Multiply(_v0, Avx.LoadVector256(rows));
            var s1 = Avx.Multiply(_v1, Avx.LoadVector256(rows + stride));
            s0 = Fma.MultiplyAdd(_v2, Avx.LoadVector256(rows + 2 * stride), s0);
            s1 = Fma.MultiplyAdd(_v3, Avx.LoadVector256(rows + 3 * stride), s1);
            if (TW.Value == 8)
            {
                s0 = Fma.MultiplyAdd(_v4, Avx.LoadVector256(rows + 4 * stride), s0);
                s1 = Fma.MultiplyAdd(_v5, Avx.LoadVector256(rows + 5 * stride), s1);
                s0 = Fma.MultiplyAdd(_v6, Avx.LoadVector256(rows + 6 * stride), s0);
                s1 = Fma.MultiplyAdd(_v7, Avx.LoadVector256(rows + 7 * stride), s1);
            }
            return Avx.Add(s0, s1);
        }

        /// <summary>rows[e·stride .. +8) += x·v_e.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void AddScaledTo(float* rows, int stride, Vector256<float> x)
        {
            Accumulate(rows, x, _v0);
            Accumulate(rows + stride, x, _v1);
            Accumulate(rows + 2 * stride, x, _v2);
            Accumulate(rows + 3 * stride, x, _v3);
            if (TW.Value == 8)
            {
                Accumulate(rows + 4 * stride, x, _v4);
                Accumulate(rows + 5 * stride, x, _v5);
                Accumulate(rows + 6 * stride, x, _v6);
                Accumulate(rows + 7 * stride, x, _v7);
            }
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private static void Accumulate(float* target, Vector256<float> x, Vector256<float> v) =>
            Avx.Store(target, Fma.MultiplyAdd(x, v, Avx.LoadVector256(target)));
    }

    /// <summary>Sums the blocks' dKᵀ, dVᵀ (rowCount rows each) of one head in block order and writes them to dk, dv in [B, M, H, width].</summary>
    private static void WriteKeyGradients(in AttentionShape a, in Tensors t, int head, int blocks, int rowCount, float* partials)
    {
        int b = head / a.Heads, h = head % a.Heads, d = a.HeadDim, dvDim = a.ValueDim, m = a.KeyLength, mp = Padded(m);
        int partial = 2 * rowCount * mp;
        for (int block = 1; block < blocks; block++)
        {
            var total = new Span<float>(partials, partial);
            System.Numerics.Tensors.TensorPrimitives.Add(total, new ReadOnlySpan<float>(partials + (long)block * partial, partial), total);
        }
        float* dkt = partials, dvt = partials + rowCount * mp;
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
