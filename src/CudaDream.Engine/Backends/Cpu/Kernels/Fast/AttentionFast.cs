using System.Buffers;
using System.Numerics.Tensors;

namespace CudaDream.Engine.Backends.Cpu.Kernels;

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
/// </summary>
public static unsafe class AttentionFast
{
    internal const int BlockQ = 64, BlockK = 64;

    /// <summary>Writes o [B,N,H,Dv] and, when non-empty, lse [B,H,N].</summary>
    public static void Forward(in AttentionShape a, ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v, Span<float> o, Span<float> lse)
    {
        a.CheckForward(q.Length, k.Length, v.Length, o.Length, lse.Length);
        var shape = a;
        int queryBlocks = (a.QueryLength + BlockQ - 1) / BlockQ;
        int tasks = a.Batch * a.Heads * queryBlocks;
        int scratch = BlockQ * a.HeadDim + a.HeadDim * BlockK + BlockK * a.ValueDim + BlockQ * BlockK + BlockQ * a.ValueDim + 2 * BlockQ;
        fixed (float* pq = q, pk = k, pv = v, po = o, pl = lse)
        {
            var t = new Tensors((nint)pq, (nint)pk, (nint)pv, (nint)po, lse.IsEmpty ? 0 : (nint)pl);
            ForTasks(tasks, scratch, (task, buffer) => ForwardBlock(shape, t, task / queryBlocks, task % queryBlocks, buffer));
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
        var shape = a;
        int heads = a.Batch * a.Heads;
        int keyBlocks = (a.KeyLength + BlockK - 1) / BlockK;
        int degree = CpuKernelOptions.MaxDegreeOfParallelism;
        int chunks = Math.Clamp((degree + heads - 1) / heads, 1, keyBlocks);
        int d = a.HeadDim, dvDim = a.ValueDim;
        int scratch = 3 * BlockK * d + 2 * BlockK * dvDim          // K, Kᵀ, dK; Vᵀ, dV tiles
            + BlockQ * d + BlockQ * dvDim + 4 * BlockQ * BlockK     // Q, dO; P, Pᵀ, dS, dSᵀ tiles
            + a.QueryLength;                                        // D for every query
        float[]? partialArray = chunks > 1 ? ArrayPool<float>.Shared.Rent(heads * chunks * a.QueryLength * d) : null;
        try
        {
            dq.Clear();
            fixed (float* pq = q, pk = k, pv = v, po = o, pl = lse, pdo = dout, pdq = dq, pdk = dk, pdv = dv, pPartial = partialArray)
            {
                var t = new Tensors((nint)pq, (nint)pk, (nint)pv, (nint)po, (nint)pl);
                var g = new Gradients((nint)pdo, (nint)pdq, (nint)pdk, (nint)pdv, (nint)pPartial);
                ForTasks(heads * chunks, scratch, (task, buffer) => BackwardChunk(shape, t, g, task / chunks, task % chunks, chunks, buffer));
                if (chunks > 1) ReducePartialDq(shape, chunks, pPartial, pdq);
            }
        }
        finally
        {
            if (partialArray != null) ArrayPool<float>.Shared.Return(partialArray);
        }
    }

    private readonly record struct Tensors(nint Q, nint K, nint V, nint O, nint Lse);
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

    private static void ForwardBlock(in AttentionShape a, in Tensors t, int head, int queryBlock, nint scratch)
    {
        int b = head / a.Heads, h = head % a.Heads, d = a.HeadDim, dv = a.ValueDim;
        int i0 = queryBlock * BlockQ, br = Math.Min(BlockQ, a.QueryLength - i0);
        float* qTile = (float*)scratch;                 // [br × d], pre-multiplied by the scale
        float* kT = qTile + BlockQ * d;                 // [d × BlockK]
        float* vTile = kT + d * BlockK;                 // [BlockK × dv]
        float* s = vTile + BlockK * dv;                 // [br × BlockK] logits, then probabilities
        float* acc = s + BlockQ * BlockK;               // [br × dv] unnormalised output
        float* rowMax = acc + BlockQ * dv;              // m
        float* rowSum = rowMax + BlockQ;                // l
        float scale = (float)a.Scale;
        for (int i = 0; i < br; i++)
            TensorPrimitives.Multiply(Row(t.Q, a.QueryLength, a.Heads, d, b, i0 + i, h), scale, new Span<float>(qTile + i * d, d));
        new Span<float>(acc, br * dv).Clear();
        new Span<float>(rowMax, br).Fill(float.NegativeInfinity);
        new Span<float>(rowSum, br).Clear();

        int keyEnd = a.Causal ? Math.Min(a.KeyLength, i0 + br) : a.KeyLength;
        for (int j0 = 0; j0 < keyEnd; j0 += BlockK)
        {
            int bc = Math.Min(BlockK, keyEnd - j0);
            for (int j = 0; j < bc; j++)
            {
                var kr = Row(t.K, a.KeyLength, a.Heads, d, b, j0 + j, h);
                for (int e = 0; e < d; e++) kT[e * BlockK + j] = kr[e];
                Row(t.V, a.KeyLength, a.Heads, dv, b, j0 + j, h).CopyTo(new Span<float>(vTile + j * dv, dv));
            }
            for (int i = 0; i < br; i++) new Span<float>(s + i * BlockK, bc).Clear();
            SmallGemm.MultiplyAdd(br, bc, d, qTile, d, kT, BlockK, s, BlockK);
            if (a.Causal) MaskFuture(s, BlockK, i0, br, j0, bc, float.NegativeInfinity);
            for (int i = 0; i < br; i++)
            {
                var row = new Span<float>(s + i * BlockK, bc);
                float mNew = MathF.Max(rowMax[i], TensorPrimitives.Max(row));
                if (float.IsNegativeInfinity(mNew)) { row.Clear(); continue; } // nothing visible yet
                float correction = MathF.Exp(rowMax[i] - mNew);
                TensorPrimitives.Subtract(row, mNew, row);
                TensorPrimitives.Exp(row, row);
                rowSum[i] = rowSum[i] * correction + TensorPrimitives.Sum(row);
                if (correction != 1f)
                {
                    var accRow = new Span<float>(acc + i * dv, dv);
                    TensorPrimitives.Multiply(accRow, correction, accRow);
                }
                rowMax[i] = mNew;
            }
            SmallGemm.MultiplyAdd(br, dv, bc, s, BlockK, vTile, dv, acc, dv);
        }

        float* lse = (float*)t.Lse;
        for (int i = 0; i < br; i++)
        {
            float l = rowSum[i];
            var outRow = Row(t.O, a.QueryLength, a.Heads, dv, b, i0 + i, h);
            TensorPrimitives.Multiply(new ReadOnlySpan<float>(acc + i * dv, dv), l > 0 ? 1f / l : 0f, outRow);
            if (lse != null) lse[((long)b * a.Heads + h) * a.QueryLength + i0 + i] = l > 0 ? rowMax[i] + MathF.Log(l) : float.NegativeInfinity;
        }
    }

    private static void BackwardChunk(in AttentionShape a, in Tensors t, in Gradients g, int head, int chunk, int chunks, nint scratch)
    {
        int b = head / a.Heads, h = head % a.Heads, d = a.HeadDim, dvDim = a.ValueDim, n = a.QueryLength;
        float scale = (float)a.Scale;
        float* kTile = (float*)scratch;                 // [BlockK × d]
        float* kT = kTile + BlockK * d;                 // [d × BlockK]
        float* vT = kT + d * BlockK;                    // [dv × BlockK]
        float* dkTile = vT + dvDim * BlockK;            // [BlockK × d]
        float* dvTile = dkTile + BlockK * d;            // [BlockK × dv]
        float* qTile = dvTile + BlockK * dvDim;         // [BlockQ × d]
        float* doTile = qTile + BlockQ * d;             // [BlockQ × dv]
        float* p = doTile + BlockQ * dvDim;             // [BlockQ × BlockK]
        float* pT = p + BlockQ * BlockK;                // [BlockK × BlockQ]
        float* ds = pT + BlockK * BlockQ;               // [BlockQ × BlockK] dP, then scale·dS
        float* dsT = ds + BlockQ * BlockK;              // [BlockK × BlockQ]
        float* rowDot = dsT + BlockK * BlockQ;          // D_i = dO_i·O_i for every query of this head
        float* lse = (float*)t.Lse + ((long)b * a.Heads + h) * n;

        for (int i = 0; i < n; i++)
            rowDot[i] = TensorPrimitives.Dot(Row(g.DOut, n, a.Heads, dvDim, b, i, h), Row(t.O, n, a.Heads, dvDim, b, i, h));

        // dQ goes straight into dq (this task owns the head) or into this task's private buffer.
        float* dqBase;
        long dqRowStride;
        if (chunks == 1)
        {
            dqBase = (float*)g.DQ + ((long)b * n * a.Heads + h) * d;
            dqRowStride = (long)a.Heads * d;
        }
        else
        {
            dqBase = (float*)g.PartialDQ + ((long)head * chunks + chunk) * n * d;
            dqRowStride = d;
            new Span<float>(dqBase, n * d).Clear();
        }

        int keyBlocks = (a.KeyLength + BlockK - 1) / BlockK;
        for (int kb = chunk; kb < keyBlocks; kb += chunks)
        {
            int j0 = kb * BlockK, bc = Math.Min(BlockK, a.KeyLength - j0);
            for (int j = 0; j < bc; j++)
            {
                var kr = Row(t.K, a.KeyLength, a.Heads, d, b, j0 + j, h);
                kr.CopyTo(new Span<float>(kTile + j * d, d));
                for (int e = 0; e < d; e++) kT[e * BlockK + j] = kr[e];
                var vr = Row(t.V, a.KeyLength, a.Heads, dvDim, b, j0 + j, h);
                for (int e = 0; e < dvDim; e++) vT[e * BlockK + j] = vr[e];
            }
            new Span<float>(dkTile, bc * d).Clear();
            new Span<float>(dvTile, bc * dvDim).Clear();

            int firstQuery = a.Causal ? j0 / BlockQ * BlockQ : 0; // earlier queries cannot see these keys
            for (int i0 = firstQuery; i0 < n; i0 += BlockQ)
            {
                int br = Math.Min(BlockQ, n - i0);
                for (int i = 0; i < br; i++)
                {
                    Row(t.Q, n, a.Heads, d, b, i0 + i, h).CopyTo(new Span<float>(qTile + i * d, d));
                    Row(g.DOut, n, a.Heads, dvDim, b, i0 + i, h).CopyTo(new Span<float>(doTile + i * dvDim, dvDim));
                    new Span<float>(p + i * BlockK, bc).Clear();
                    new Span<float>(ds + i * BlockK, bc).Clear();
                }
                // P = exp(scale·Q·Kᵀ − lse)
                SmallGemm.MultiplyAdd(br, bc, d, qTile, d, kT, BlockK, p, BlockK);
                for (int i = 0; i < br; i++)
                {
                    var row = new Span<float>(p + i * BlockK, bc);
                    float l = lse[i0 + i];
                    if (float.IsNegativeInfinity(l)) { row.Clear(); continue; }
                    VectorMath.Affine(row, scale, -l, row);
                    TensorPrimitives.Exp(row, row);
                }
                if (a.Causal) MaskFuture(p, BlockK, i0, br, j0, bc, 0f);
                Transpose(p, BlockK, br, bc, pT, BlockQ);
                SmallGemm.MultiplyAdd(bc, dvDim, br, pT, BlockQ, doTile, dvDim, dvTile, dvDim);   // dV += Pᵀ·dO
                SmallGemm.MultiplyAdd(br, bc, dvDim, doTile, dvDim, vT, BlockK, ds, BlockK);      // dP = dO·Vᵀ
                for (int i = 0; i < br; i++)
                {
                    // scale·dS = scale·P ⊙ (dP − D)
                    var dsRow = new Span<float>(ds + i * BlockK, bc);
                    TensorPrimitives.Subtract(dsRow, rowDot[i0 + i], dsRow);
                    TensorPrimitives.Multiply(dsRow, new ReadOnlySpan<float>(p + i * BlockK, bc), dsRow);
                    TensorPrimitives.Multiply(dsRow, scale, dsRow);
                }
                SmallGemm.MultiplyAdd(br, d, bc, ds, BlockK, kTile, d, dqBase + i0 * dqRowStride, (int)dqRowStride); // dQ += dS·K
                Transpose(ds, BlockK, br, bc, dsT, BlockQ);
                SmallGemm.MultiplyAdd(bc, d, br, dsT, BlockQ, qTile, d, dkTile, d);            // dK += dSᵀ·Q
            }
            for (int j = 0; j < bc; j++)
            {
                new ReadOnlySpan<float>(dkTile + j * d, d).CopyTo(Row(g.DK, a.KeyLength, a.Heads, d, b, j0 + j, h));
                new ReadOnlySpan<float>(dvTile + j * dvDim, dvDim).CopyTo(Row(g.DV, a.KeyLength, a.Heads, dvDim, b, j0 + j, h));
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

    /// <summary>Row (b, position, h) of a BNHD tensor with sequence length len and width width.</summary>
    private static Span<float> Row(nint tensor, int len, int heads, int width, int b, int position, int h) =>
        new((float*)tensor + (((long)b * len + position) * heads + h) * width, width);

    /// <summary>Sets tile entries whose key index j0+j exceeds the query index i0+i.</summary>
    private static void MaskFuture(float* tile, int ld, int i0, int br, int j0, int bc, float value)
    {
        if (j0 + bc - 1 <= i0) return; // the whole tile is at or below the diagonal
        for (int i = 0; i < br; i++)
        {
            int firstHidden = Math.Max(0, i0 + i + 1 - j0);
            if (firstHidden < bc) new Span<float>(tile + i * ld + firstHidden, bc - firstHidden).Fill(value);
        }
    }

    private static void Transpose(float* src, int ldSrc, int rows, int cols, float* dst, int ldDst)
    {
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < cols; j++) dst[j * ldDst + i] = src[i * ldSrc + j];
    }
}
