using System.Numerics;
using CudaDream.Engine.Backends.Cpu.Kernels;

namespace CudaDream.Engine.Ops;

/// <summary>
/// Scaled dot-product attention (Vaswani et al. 2017, eq. 1), one (batch, head) at a time with the full
/// N×M probability matrix materialised: S = scale·Q·Kᵀ (causal: s_ij = −inf for j > i),
/// lse_i = log Σ_j exp(s_ij), P = exp(S − lse), O = P·V. The backward recomputes P from lse
/// (FlashAttention-2, Dao 2023, Algorithm 2): dV = Pᵀ·dO, dP = dO·Vᵀ, D_i = dO_i·O_i,
/// dS = P ⊙ (dP − D), dQ = scale·dS·K, dK = scale·dSᵀ·Q.
/// Layouts: see <see cref="AttentionShape"/>.
/// </summary>
public static class AttentionReference
{
    /// <summary>Writes o [B,N,H,Dv] and, when non-empty, lse [B,H,N] (saved for the backward).</summary>
    public static void Forward<T>(in AttentionShape a, ReadOnlySpan<T> q, ReadOnlySpan<T> k, ReadOnlySpan<T> v, Span<T> o, Span<T> lse)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        a.CheckForward(q.Length, k.Length, v.Length, o.Length, lse.Length);
        var p = new T[a.QueryLength * a.KeyLength];
        var rowLse = new T[a.QueryLength];
        for (int b = 0; b < a.Batch; b++)
        for (int h = 0; h < a.Heads; h++)
        {
            Probabilities(a, b, h, q, k, p, rowLse, computeLse: true);
            for (int i = 0; i < a.QueryLength; i++)
            {
                if (!lse.IsEmpty) lse[(b * a.Heads + h) * a.QueryLength + i] = rowLse[i];
                for (int e = 0; e < a.ValueDim; e++)
                {
                    T sum = T.Zero;
                    for (int j = 0; j < a.KeyLength; j++) sum += p[i * a.KeyLength + j] * v[ValueIndex(a, b, j, h, e)];
                    o[OutputIndex(a, b, i, h, e)] = sum;
                }
            }
        }
    }

    /// <summary>
    /// Backward from the saved o and lse: writes dq, dk, dv (overwrite).
    /// </summary>
    public static void Backward<T>(in AttentionShape a, ReadOnlySpan<T> q, ReadOnlySpan<T> k, ReadOnlySpan<T> v, ReadOnlySpan<T> o,
        ReadOnlySpan<T> lse, ReadOnlySpan<T> dout, Span<T> dq, Span<T> dk, Span<T> dv)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        a.CheckForward(q.Length, k.Length, v.Length, o.Length, lse.Length);
        KernelChecks.Exact(lse.Length, a.LseLength, nameof(lse));
        KernelChecks.Exact(dout.Length, a.OutputLengthTotal, nameof(dout));
        KernelChecks.Exact(dq.Length, a.QueryLengthTotal, nameof(dq));
        KernelChecks.Exact(dk.Length, a.KeyLengthTotal, nameof(dk));
        KernelChecks.Exact(dv.Length, a.ValueLengthTotal, nameof(dv));
        T scale = T.CreateChecked(a.Scale);
        int n = a.QueryLength, m = a.KeyLength;
        var p = new T[n * m];
        var ds = new T[n * m];
        var rowLse = new T[n];
        for (int b = 0; b < a.Batch; b++)
        for (int h = 0; h < a.Heads; h++)
        {
            for (int i = 0; i < n; i++) rowLse[i] = lse[(b * a.Heads + h) * n + i];
            Probabilities(a, b, h, q, k, p, rowLse, computeLse: false);
            for (int i = 0; i < n; i++)
            {
                T rowDot = T.Zero; // D_i = dO_i · O_i = Σ_j P_ij dP_ij
                for (int e = 0; e < a.ValueDim; e++) rowDot += dout[OutputIndex(a, b, i, h, e)] * o[OutputIndex(a, b, i, h, e)];
                for (int j = 0; j < m; j++)
                {
                    T dp = T.Zero;
                    for (int e = 0; e < a.ValueDim; e++) dp += dout[OutputIndex(a, b, i, h, e)] * v[ValueIndex(a, b, j, h, e)];
                    ds[i * m + j] = p[i * m + j] * (dp - rowDot);
                }
            }
            for (int j = 0; j < m; j++)
            for (int e = 0; e < a.ValueDim; e++)
            {
                T sum = T.Zero;
                for (int i = 0; i < n; i++) sum += p[i * m + j] * dout[OutputIndex(a, b, i, h, e)];
                dv[ValueIndex(a, b, j, h, e)] = sum;
            }
            for (int i = 0; i < n; i++)
            for (int e = 0; e < a.HeadDim; e++)
            {
                T sum = T.Zero;
                for (int j = 0; j < m; j++) sum += ds[i * m + j] * k[KeyIndex(a, b, j, h, e)];
                dq[QueryIndex(a, b, i, h, e)] = scale * sum;
            }
            for (int j = 0; j < m; j++)
            for (int e = 0; e < a.HeadDim; e++)
            {
                T sum = T.Zero;
                for (int i = 0; i < n; i++) sum += ds[i * m + j] * q[QueryIndex(a, b, i, h, e)];
                dk[KeyIndex(a, b, j, h, e)] = scale * sum;
            }
        }
    }

    /// <summary>
    /// P = exp(S − lse) for one (b, h). With computeLse the row log-sum-exp is computed into rowLse first;
    /// otherwise rowLse holds the saved one. A row with no visible key has lse = −inf and P = 0.
    /// </summary>
    private static void Probabilities<T>(in AttentionShape a, int b, int h, ReadOnlySpan<T> q, ReadOnlySpan<T> k, Span<T> p, Span<T> rowLse, bool computeLse)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        T scale = T.CreateChecked(a.Scale);
        int n = a.QueryLength, m = a.KeyLength;
        for (int i = 0; i < n; i++)
        {
            var row = p.Slice(i * m, m);
            for (int j = 0; j < m; j++)
            {
                if (a.Causal && j > i) { row[j] = T.NegativeInfinity; continue; }
                T dot = T.Zero;
                for (int e = 0; e < a.HeadDim; e++) dot += q[QueryIndex(a, b, i, h, e)] * k[KeyIndex(a, b, j, h, e)];
                row[j] = scale * dot;
            }
            if (computeLse)
            {
                T max = T.NegativeInfinity;
                foreach (T s in row) max = T.Max(max, s);
                T sum = T.Zero;
                if (!T.IsNegativeInfinity(max)) foreach (T s in row) sum += T.Exp(s - max);
                rowLse[i] = T.IsNegativeInfinity(max) ? max : max + T.Log(sum);
            }
            T l = rowLse[i];
            for (int j = 0; j < m; j++) row[j] = T.IsNegativeInfinity(l) ? T.Zero : T.Exp(row[j] - l);
        }
    }

    private static int QueryIndex(in AttentionShape a, int b, int i, int h, int e) => ((b * a.QueryLength + i) * a.Heads + h) * a.HeadDim + e;
    private static int KeyIndex(in AttentionShape a, int b, int j, int h, int e) => ((b * a.KeyLength + j) * a.Heads + h) * a.HeadDim + e;
    private static int ValueIndex(in AttentionShape a, int b, int j, int h, int e) => ((b * a.KeyLength + j) * a.Heads + h) * a.ValueDim + e;
    private static int OutputIndex(in AttentionShape a, int b, int i, int h, int e) => ((b * a.QueryLength + i) * a.Heads + h) * a.ValueDim + e;
}
