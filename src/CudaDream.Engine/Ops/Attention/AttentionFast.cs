using System.Buffers;
using System.Numerics;
using System.Numerics.Tensors;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using CudaDream.Engine.Backends.Cpu.Kernels;

namespace CudaDream.Engine.Ops;

/// <summary>
/// fp32 scaled dot-product attention with the contract of <see cref="AttentionReference"/> (BNHD layout,
/// lse [B,H,N] saved), computed as FlashAttention-2 (T. Dao, "FlashAttention-2: Faster Attention with
/// Better Parallelism and Work Partitioning", 2023): the N×M logits are never materialised beyond one
/// BlockQ×BlockK tile per worker.
/// Forward (Algorithm 1): per (b, h, query block), stream key/value blocks with the online softmax —
/// running row max m and sum l, rescaling the output accumulator by e^(m_old − m_new) — and divide by l
/// once at the end; lse = m + log l.
/// Backward (Algorithm 2): per (b, h, key block), stream the query blocks, recompute P = exp(S − lse),
/// accumulate dV += Pᵀ·dO and dK += dSᵀ·Q in the tile, and add dQ += dS·K; D = rowsum(dO ⊙ O) replaces
/// the softmax Jacobian. The GPU version adds dQ with atomics; here a head's key blocks run in one task
/// (or, when there are fewer heads than threads, in a few tasks with private dQ buffers summed at the end).
/// Narrow heads (<see cref="AttentionNarrow.MaxForwardWidth"/>, <see cref="AttentionNarrow.MaxBackwardWidth"/>) go to <see cref="AttentionNarrow"/> instead.
/// Q, K, V, dO rows are read in place through their row stride H·d; only Kᵀ (and Vᵀ for the backward)
/// is laid out once per call, as one d×BlockK tile per key block (a whole-sequence Kᵀ would put the rows
/// of a tile M floats apart — 4 KiB for M = 1024 — and thrash the L1 sets).
/// </summary>
public static unsafe class AttentionFast
{
    internal const int BlockQ = 64, BlockK = 64;

    /// <summary>Writes o [B,N,H,Dv] and, when non-empty, lse [B,H,N].</summary>
    public static void Forward(in AttentionShape a, ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v, Span<float> o, Span<float> lse)
    {
        a.CheckForward(q.Length, k.Length, v.Length, o.Length, lse.Length);
        if (AttentionNarrow.HandlesForward(a))
        {
            fixed (float* pq = q, pk = k, pv = v, po = o, pl = lse)
                AttentionNarrow.Forward(a, pq, pk, pv, po, lse.IsEmpty ? null : pl);
            return;
        }
        var shape = a;
        int queryBlocks = (a.QueryLength + BlockQ - 1) / BlockQ;
        int tasks = a.Batch * a.Heads * queryBlocks;
        int scratch = BlockQ * BlockK + BlockQ * a.ValueDim + 2 * BlockQ;
        float[] kTransposed = ArrayPool<float>.Shared.Rent(TransposedLength(a, a.HeadDim));
        try
        {
            fixed (float* pq = q, pk = k, pv = v, po = o, pl = lse, pkt = kTransposed)
            {
                TransposePerHead(a, pk, a.HeadDim, pkt);
                var t = new Tensors((nint)pq, (nint)pk, (nint)pv, (nint)po, lse.IsEmpty ? 0 : (nint)pl, (nint)pkt, 0);
                ForTasks(tasks, scratch, (task, buffer) => ForwardBlock(shape, t, task / queryBlocks, task % queryBlocks, buffer));
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(kTransposed);
        }
    }

    /// <summary>Writes dq, dk, dv (overwrite) from the forward's o and lse.</summary>
    public static void Backward(in AttentionShape a, ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v, ReadOnlySpan<float> o,
        ReadOnlySpan<float> lse, ReadOnlySpan<float> dout, Span<float> dq, Span<float> dk, Span<float> dv)
    {
        a.CheckForward(q.Length, k.Length, v.Length, o.Length, lse.Length);
        KernelChecks.Exact(lse.Length, a.LseLength, nameof(lse));
        KernelChecks.Exact(dout.Length, a.OutputLengthTotal, nameof(dout));
        KernelChecks.Exact(dq.Length, a.QueryLengthTotal, nameof(dq));
        KernelChecks.Exact(dk.Length, a.KeyLengthTotal, nameof(dk));
        KernelChecks.Exact(dv.Length, a.ValueLengthTotal, nameof(dv));
        if (AttentionNarrow.HandlesBackward(a))
        {
            fixed (float* pq = q, pk = k, pv = v, po = o, pl = lse, pdo = dout, pdq = dq, pdk = dk, pdv = dv)
                AttentionNarrow.Backward(a, pq, pk, pv, po, pl, pdo, pdq, pdk, pdv);
            return;
        }
        var shape = a;
        int heads = a.Batch * a.Heads;
        int keyBlocks = (a.KeyLength + BlockK - 1) / BlockK;
        int degree = CpuKernelOptions.MaxDegreeOfParallelism;
        int chunks = Math.Clamp((degree + heads - 1) / heads, 1, keyBlocks);
        int scratch = BlockK * a.HeadDim + BlockK * a.ValueDim + 2 * BlockQ * BlockK + a.QueryLength;
        float[] kTransposed = ArrayPool<float>.Shared.Rent(TransposedLength(a, a.HeadDim));
        float[] vTransposed = ArrayPool<float>.Shared.Rent(TransposedLength(a, a.ValueDim));
        float[]? partialArray = chunks > 1 ? ArrayPool<float>.Shared.Rent(heads * chunks * a.QueryLength * a.HeadDim) : null;
        try
        {
            dq.Clear();
            fixed (float* pq = q, pk = k, pv = v, po = o, pl = lse, pdo = dout, pdq = dq, pdk = dk, pdv = dv,
                   pkt = kTransposed, pvt = vTransposed, pPartial = partialArray)
            {
                TransposePerHead(a, pk, a.HeadDim, pkt);
                TransposePerHead(a, pv, a.ValueDim, pvt);
                var t = new Tensors((nint)pq, (nint)pk, (nint)pv, (nint)po, (nint)pl, (nint)pkt, (nint)pvt);
                var g = new Gradients((nint)pdo, (nint)pdq, (nint)pdk, (nint)pdv, (nint)pPartial);
                ForTasks(heads * chunks, scratch, (task, buffer) => BackwardChunk(shape, t, g, task / chunks, task % chunks, chunks, buffer));
                if (chunks > 1) ReducePartialDq(shape, chunks, pPartial, pdq);
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(kTransposed);
            ArrayPool<float>.Shared.Return(vTransposed);
            if (partialArray != null) ArrayPool<float>.Shared.Return(partialArray);
        }
    }

    /// <summary>Raw pointers to the tensors (spans cannot be captured by the parallel bodies). KT/VT: [B·H, key blocks, width, BlockK].</summary>
    private readonly record struct Tensors(nint Q, nint K, nint V, nint O, nint Lse, nint KT, nint VT);
    private readonly record struct Gradients(nint DOut, nint DQ, nint DK, nint DV, nint PartialDQ);

    /// <summary>Runs body(task, scratch) for every task, each worker renting one scratch buffer of the given size.</summary>
    private static void ForTasks(int tasks, int scratchLength, Action<int, nint> body)
    {
        int degree = Math.Min(CpuKernelOptions.MaxDegreeOfParallelism, tasks);
        if (degree <= 1)
        {
            float[] buffer = ArrayPool<float>.Shared.Rent(scratchLength);
            try
            {
                fixed (float* s = buffer) for (int t = 0; t < tasks; t++) body(t, (nint)s);
            }
            finally
            {
                ArrayPool<float>.Shared.Return(buffer);
            }
            return;
        }
        Parallel.For(0, tasks, CpuKernelOptions.ParallelOptions(degree),
            () => ArrayPool<float>.Shared.Rent(scratchLength),
            (t, _, buffer) =>
            {
                fixed (float* s = buffer) body(t, (nint)s);
                return buffer;
            },
            buffer => ArrayPool<float>.Shared.Return(buffer));
    }

    private static int TransposedLength(in AttentionShape a, int width) =>
        checked(a.Batch * a.Heads * ((a.KeyLength + BlockK - 1) / BlockK) * width * BlockK);

    /// <summary>Key block kb of head (b, h) as a width × BlockK tile: dst[((b·H + h)·blocks + kb)·width + e][j] = src[b, kb·BlockK + j, h, e].</summary>
    private static float* TransposedTile(float* transposed, in AttentionShape a, int head, int keyBlock, int width) =>
        transposed + ((long)head * ((a.KeyLength + BlockK - 1) / BlockK) + keyBlock) * width * BlockK;

    private static void TransposePerHead(in AttentionShape a, float* src, int width, float* dst)
    {
        int m = a.KeyLength, heads = a.Heads;
        nint s = (nint)src, d = (nint)dst;
        int batch = a.Batch;
        var shape = a;
        void Head(int head)
        {
            int b = head / heads, h = head % heads;
            float* from = (float*)s + ((long)b * m * heads + h) * width;
            for (int j = 0; j < m; j++, from += (long)heads * width)
            {
                float* tile = TransposedTile((float*)d, shape, head, j / BlockK, width) + j % BlockK;
                for (int e = 0; e < width; e++) tile[e * BlockK] = from[e];
            }
        }
        int degree = CpuKernelOptions.MaxDegreeOfParallelism;
        if (degree > 1 && batch * heads > 1 && (long)batch * m * heads * width > 1 << 16)
            Parallel.For(0, batch * heads, CpuKernelOptions.ParallelOptions(degree), Head);
        else
            for (int head = 0; head < batch * heads; head++) Head(head);
    }

    private static void ForwardBlock(in AttentionShape a, in Tensors t, int head, int queryBlock, nint scratch)
    {
        int b = head / a.Heads, h = head % a.Heads, d = a.HeadDim, dv = a.ValueDim, m = a.KeyLength;
        int i0 = queryBlock * BlockQ, br = Math.Min(BlockQ, a.QueryLength - i0);
        float* s = (float*)scratch;                     // [br × BlockK] logits, then probabilities
        float* acc = s + BlockQ * BlockK;               // [br × dv] unnormalised output
        float* rowMax = acc + BlockQ * dv;              // m
        float* rowSum = rowMax + BlockQ;                // l
        float scale = (float)a.Scale;
        float* qRows = (float*)t.Q + (((long)b * a.QueryLength + i0) * a.Heads + h) * d;
        int qStride = a.Heads * d, vStride = a.Heads * dv;
        new Span<float>(acc, br * dv).Clear();
        new Span<float>(rowMax, br).Fill(float.NegativeInfinity);
        new Span<float>(rowSum, br).Clear();

        int keyEnd = a.Causal ? Math.Min(m, i0 + br) : m;
        for (int j0 = 0; j0 < keyEnd; j0 += BlockK)
        {
            int bc = Math.Min(BlockK, keyEnd - j0);
            float* kT = TransposedTile((float*)t.KT, a, head, j0 / BlockK, d);
            AttentionTileGemm.Multiply(br, bc, d, qRows, qStride, 1, kT, BlockK, s, BlockK, accumulate: false);
            for (int i = 0; i < br; i++)
            {
                float* row = s + i * BlockK;
                int visible = a.Causal ? Math.Clamp(i0 + i + 1 - j0, 0, bc) : bc;
                float tileMax = ScaleMaskMax(row, bc, visible, scale);
                float mNew = MathF.Max(rowMax[i], tileMax);
                if (float.IsNegativeInfinity(mNew))
                {
                    new Span<float>(row, bc).Clear(); // nothing visible yet: e^−inf = 0
                    continue;
                }
                float correction = MathF.Exp(rowMax[i] - mNew);
                if (correction != 1f)
                {
                    var accRow = new Span<float>(acc + i * dv, dv);
                    TensorPrimitives.Multiply(accRow, correction, accRow);
                }
                rowSum[i] = rowSum[i] * correction + ExpShiftedSum(row, bc, mNew);
                rowMax[i] = mNew;
            }
            float* vRows = (float*)t.V + (((long)b * m + j0) * a.Heads + h) * dv;
            AttentionTileGemm.Multiply(br, dv, bc, s, BlockK, 1, vRows, vStride, acc, dv, accumulate: true);
        }

        float* lse = (float*)t.Lse;
        for (int i = 0; i < br; i++)
        {
            float l = rowSum[i];
            var outRow = new Span<float>((float*)t.O + (((long)b * a.QueryLength + i0 + i) * a.Heads + h) * dv, dv);
            TensorPrimitives.Multiply(new ReadOnlySpan<float>(acc + i * dv, dv), l > 0 ? 1f / l : 0f, outRow);
            if (lse != null) lse[((long)b * a.Heads + h) * a.QueryLength + i0 + i] = l > 0 ? rowMax[i] + MathF.Log(l) : float.NegativeInfinity;
        }
    }

    private static void BackwardChunk(in AttentionShape a, in Tensors t, in Gradients g, int head, int chunk, int chunks, nint scratch)
    {
        int b = head / a.Heads, h = head % a.Heads, d = a.HeadDim, dvDim = a.ValueDim, n = a.QueryLength, m = a.KeyLength;
        float scale = (float)a.Scale;
        float* dkTile = (float*)scratch;                // [BlockK × d]
        float* dvTile = dkTile + BlockK * d;            // [BlockK × dv]
        float* p = dvTile + BlockK * dvDim;             // [BlockQ × BlockK] probabilities
        float* ds = p + BlockQ * BlockK;                // [BlockQ × BlockK] dP, then scale·dS
        float* rowDot = ds + BlockQ * BlockK;           // D_i = dO_i·O_i for every query of this head
        float* lse = (float*)t.Lse + ((long)b * a.Heads + h) * n;
        int qStride = a.Heads * d, vStride = a.Heads * dvDim;
        float* qHead = (float*)t.Q + ((long)b * n * a.Heads + h) * d;
        float* doHead = (float*)g.DOut + ((long)b * n * a.Heads + h) * dvDim;
        float* oHead = (float*)t.O + ((long)b * n * a.Heads + h) * dvDim;

        for (int i = 0; i < n; i++)
            rowDot[i] = TensorPrimitives.Dot(new ReadOnlySpan<float>(doHead + (long)i * vStride, dvDim), new ReadOnlySpan<float>(oHead + (long)i * vStride, dvDim));

        // dQ goes straight into dq (this task owns the head) or into this task's private buffer.
        float* dqHead;
        int dqStride;
        if (chunks == 1)
        {
            dqHead = (float*)g.DQ + ((long)b * n * a.Heads + h) * d;
            dqStride = qStride;
        }
        else
        {
            dqHead = (float*)g.PartialDQ + ((long)head * chunks + chunk) * n * d;
            dqStride = d;
            new Span<float>(dqHead, n * d).Clear();
        }

        int keyBlocks = (m + BlockK - 1) / BlockK;
        for (int kb = chunk; kb < keyBlocks; kb += chunks)
        {
            int j0 = kb * BlockK, bc = Math.Min(BlockK, m - j0);
            float* kRows = (float*)t.K + (((long)b * m + j0) * a.Heads + h) * d;
            float* kT = TransposedTile((float*)t.KT, a, head, kb, d);
            float* vT = TransposedTile((float*)t.VT, a, head, kb, dvDim);
            new Span<float>(dkTile, bc * d).Clear();
            new Span<float>(dvTile, bc * dvDim).Clear();

            int firstQuery = a.Causal ? j0 / BlockQ * BlockQ : 0; // earlier queries cannot see these keys
            for (int i0 = firstQuery; i0 < n; i0 += BlockQ)
            {
                int br = Math.Min(BlockQ, n - i0);
                float* qRows = qHead + (long)i0 * qStride;
                float* doRows = doHead + (long)i0 * vStride;
                // P = exp(scale·Q·Kᵀ − lse), 0 where masked
                AttentionTileGemm.Multiply(br, bc, d, qRows, qStride, 1, kT, BlockK, p, BlockK, accumulate: false);
                for (int i = 0; i < br; i++)
                {
                    float l = lse[i0 + i];
                    int visible = float.IsNegativeInfinity(l) ? 0 : a.Causal ? Math.Clamp(i0 + i + 1 - j0, 0, bc) : bc;
                    ExpScaledShifted(p + i * BlockK, bc, visible, scale, -l);
                }
                AttentionTileGemm.Multiply(bc, dvDim, br, p, 1, BlockK, doRows, vStride, dvTile, dvDim, accumulate: true);   // dV += Pᵀ·dO
                AttentionTileGemm.Multiply(br, bc, dvDim, doRows, vStride, 1, vT, BlockK, ds, BlockK, accumulate: false);   // dP = dO·Vᵀ
                for (int i = 0; i < br; i++) SoftmaxGradient(ds + i * BlockK, p + i * BlockK, bc, rowDot[i0 + i], scale);
                AttentionTileGemm.Multiply(br, d, bc, ds, BlockK, 1, kRows, qStride, dqHead + (long)i0 * dqStride, dqStride, accumulate: true); // dQ += dS·K
                AttentionTileGemm.Multiply(bc, d, br, ds, 1, BlockK, qRows, qStride, dkTile, d, accumulate: true);            // dK += dSᵀ·Q
            }
            for (int j = 0; j < bc; j++)
            {
                new ReadOnlySpan<float>(dkTile + j * d, d).CopyTo(new Span<float>((float*)g.DK + (((long)b * m + j0 + j) * a.Heads + h) * d, d));
                new ReadOnlySpan<float>(dvTile + j * dvDim, dvDim).CopyTo(new Span<float>((float*)g.DV + (((long)b * m + j0 + j) * a.Heads + h) * dvDim, dvDim));
            }
        }
    }

    private static void ReducePartialDq(in AttentionShape a, int chunks, float* partial, float* dq)
    {
        int n = a.QueryLength, d = a.HeadDim;
        for (int head = 0; head < a.Batch * a.Heads; head++)
        {
            int b = head / a.Heads, h = head % a.Heads;
            for (int c = 0; c < chunks; c++)
            {
                float* src = partial + ((long)head * chunks + c) * n * d;
                for (int i = 0; i < n; i++)
                {
                    var target = new Span<float>(dq + (((long)b * n + i) * a.Heads + h) * d, d);
                    TensorPrimitives.Add(target, new ReadOnlySpan<float>(src + (long)i * d, d), target);
                }
            }
        }
    }

    /// <summary>row[0..visible) *= scale, row[visible..count) = −inf; returns the max of the visible entries (−inf if none).</summary>
    private static float ScaleMaskMax(float* row, int count, int visible, float scale)
    {
        int w = Vector<float>.Count, j = 0;
        var vs = new Vector<float>(scale);
        var vmax = new Vector<float>(float.NegativeInfinity);
        for (; j + w <= visible; j += w)
        {
            var x = Vector.Load(row + j) * vs;
            x.Store(row + j);
            vmax = Vector.Max(vmax, x);
        }
        float max = float.NegativeInfinity;
        for (int e = 0; e < w; e++) max = MathF.Max(max, vmax[e]);
        for (; j < visible; j++)
        {
            row[j] *= scale;
            max = MathF.Max(max, row[j]);
        }
        for (j = visible; j < count; j++) row[j] = float.NegativeInfinity;
        return max;
    }

    /// <summary>row[j] = e^(row[j] − shift) for j &lt; count; returns their sum.</summary>
    private static float ExpShiftedSum(float* row, int count, float shift)
    {
        int j = 0;
        float sum = 0f;
        if (FloatExp.IsSupported)
        {
            var vs = Vector256.Create(shift);
            var acc = Vector256<float>.Zero;
            for (; j + 8 <= count; j += 8)
            {
                var e = FloatExp.Exp(Avx.Subtract(Avx.LoadVector256(row + j), vs));
                Avx.Store(row + j, e);
                acc = Avx.Add(acc, e);
            }
            sum = Vector256.Sum(acc);
        }
        else
        {
            var all = new Span<float>(row, count - count % 8);
            TensorPrimitives.Subtract(all, shift, all);
            TensorPrimitives.Exp(all, all);
            sum = TensorPrimitives.Sum(all);
            j = all.Length;
        }
        for (; j < count; j++)
        {
            row[j] = MathF.Exp(row[j] - shift);
            sum += row[j];
        }
        return sum;
    }

    /// <summary>row[j] = e^(scale·row[j] + shift) for j &lt; visible, 0 for visible ≤ j &lt; count.</summary>
    private static void ExpScaledShifted(float* row, int count, int visible, float scale, float shift)
    {
        int j = 0;
        if (FloatExp.IsSupported)
        {
            var vScale = Vector256.Create(scale);
            var vShift = Vector256.Create(shift);
            for (; j + 8 <= visible; j += 8) Avx.Store(row + j, FloatExp.Exp(Fma.MultiplyAdd(Avx.LoadVector256(row + j), vScale, vShift)));
        }
        else
        {
            // TensorPrimitives vectorises on every ISA (AdvSimd included).
            var all = new Span<float>(row + j, visible - j);
            TensorPrimitives.Multiply(all, scale, all);
            TensorPrimitives.Add(all, shift, all);
            TensorPrimitives.Exp(all, all);
            j = visible;
        }
        for (; j < visible; j++) row[j] = MathF.Exp(row[j] * scale + shift);
        for (; j < count; j++) row[j] = 0f;
    }

    /// <summary>ds ← scale·p ⊙ (ds − D): the softmax backward of one row, dP already in ds.</summary>
    private static void SoftmaxGradient(float* ds, float* p, int count, float rowDot, float scale)
    {
        int w = Vector<float>.Count, j = 0;
        var vd = new Vector<float>(rowDot);
        var vs = new Vector<float>(scale);
        for (; j + w <= count; j += w) (vs * Vector.Load(p + j) * (Vector.Load(ds + j) - vd)).Store(ds + j);
        for (; j < count; j++) ds[j] = scale * p[j] * (ds[j] - rowDot);
    }
}
