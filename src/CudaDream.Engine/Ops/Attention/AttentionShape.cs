using CudaDream.Engine.Backends.Cpu.Kernels;

namespace CudaDream.Engine.Ops;

/// <summary>
/// Shapes of scaled dot-product attention in the "BNHD" layout that linear projections produce
/// (no head transposes): q [B, N, H, D], k [B, M, H, D], v [B, M, H, Dv], o [B, N, H, Dv];
/// the saved log-sum-exp is lse [B, H, N]. Logits are s_ij = Scale · q_i·k_j; with
/// <see cref="Causal"/> query i sees keys j ≤ i only (self-attention, N == M).
/// </summary>
public readonly record struct AttentionShape(int Batch, int QueryLength, int KeyLength, int Heads, int HeadDim, int ValueDim, double Scale, bool Causal = false)
{
    /// <summary>The common case: Dv = D and Scale = 1/√D.</summary>
    public static AttentionShape Create(int batch, int queryLength, int keyLength, int heads, int headDim, bool causal = false) =>
        new(batch, queryLength, keyLength, heads, headDim, headDim, 1.0 / Math.Sqrt(headDim), causal);

    public long QueryLengthTotal => (long)Batch * QueryLength * Heads * HeadDim;
    public long KeyLengthTotal => (long)Batch * KeyLength * Heads * HeadDim;
    public long ValueLengthTotal => (long)Batch * KeyLength * Heads * ValueDim;
    public long OutputLengthTotal => (long)Batch * QueryLength * Heads * ValueDim;
    public long LseLength => (long)Batch * Heads * QueryLength;

    public void Validate()
    {
        KernelChecks.Positive(Batch, nameof(Batch));
        KernelChecks.Positive(QueryLength, nameof(QueryLength));
        KernelChecks.Positive(KeyLength, nameof(KeyLength));
        KernelChecks.Positive(Heads, nameof(Heads));
        KernelChecks.Positive(HeadDim, nameof(HeadDim));
        KernelChecks.Positive(ValueDim, nameof(ValueDim));
        if (!double.IsFinite(Scale)) throw new ArgumentOutOfRangeException(nameof(Scale), Scale, "the attention scale must be finite");
        if (Causal && QueryLength != KeyLength)
            throw new ArgumentException($"causal attention needs as many queries as keys (got {QueryLength} and {KeyLength})");
        if (QueryLengthTotal > int.MaxValue || KeyLengthTotal > int.MaxValue || ValueLengthTotal > int.MaxValue || OutputLengthTotal > int.MaxValue)
            throw new ArgumentException("attention tensors over 2^31 elements are not supported");
    }

    internal void CheckForward(int q, int k, int v, int o, int lse)
    {
        Validate();
        KernelChecks.Exact(q, QueryLengthTotal, "q");
        KernelChecks.Exact(k, KeyLengthTotal, "k");
        KernelChecks.Exact(v, ValueLengthTotal, "v");
        KernelChecks.Exact(o, OutputLengthTotal, "o");
        KernelChecks.Optional(lse, LseLength, "lse");
    }
}
