using CudaDream.Engine.Tensors;

namespace CudaDream.Engine.Training.Optimizers;

/// <summary>
/// AdamW with 8-bit moments (Dettmers et al. 2022, "8-bit Optimizers via Block-wise Quantization"): between updates
/// the first moment is stored in the signed dynamic tree type and the second in the unsigned dynamic type, block-wise
/// with one fp32 absmax per 2048 elements (<see cref="DynamicQuantization"/>). An update dequantizes a block, runs
/// exactly <see cref="AdamW"/>'s fp32 element update on it, and quantizes the new moments again: 2 bytes of state
/// per parameter plus 8 per block, against AdamW's 8 bytes.
/// Checkpoint state: <c>{group}/{parameter}/exp_avg.q8</c> (U8 [n]), <c>…/exp_avg.absmax</c> (F32 [blocks]), and
/// the same for <c>exp_avg_sq</c>.
/// </summary>
public sealed class AdamW8bit : Optimizer
{
    private sealed class Moments(int length)
    {
        public readonly byte[] M = new byte[length], V = new byte[length];
        public readonly float[] MAbsmax = new float[DynamicQuantization.Blocks(length)], VAbsmax = new float[DynamicQuantization.Blocks(length)];
    }

    private static readonly string[] Kinds = ["exp_avg", "exp_avg_sq"];
    private readonly Moments[][] _state;
    public AdamWOptions Options { get; }

    public AdamW8bit(IReadOnlyList<ParameterGroup> groups, AdamWOptions? options = null) : base(groups)
    {
        Options = options ?? new AdamWOptions();
        if (!(Options.Beta1 is >= 0 and < 1) || !(Options.Beta2 is >= 0 and < 1) || !(Options.Epsilon >= 0))
            throw new CudaDreamException($"invalid AdamW options {Options}: betas must be in [0, 1) and epsilon ≥ 0");
        byte zeroSigned = DynamicQuantization.Nearest(DynamicQuantization.SignedBook, 0f), zeroUnsigned = DynamicQuantization.Nearest(DynamicQuantization.UnsignedBook, 0f);
        _state = groups.Select(g => g.Parameters.Select(p =>
        {
            var m = new Moments(p.Length);
            m.M.AsSpan().Fill(zeroSigned);
            m.V.AsSpan().Fill(zeroUnsigned);
            return m;
        }).ToArray()).ToArray();
    }

    public override long StateBytes =>
        Groups.Count * sizeof(long) + _state.Sum(g => g.Sum(m => 2L * m.M.Length + sizeof(float) * (m.MAbsmax.Length + m.VAbsmax.Length)));

    protected override void Update(ParameterGroup group, int parameterIndex)
    {
        var p = group.Parameters[parameterIndex];
        var state = _state[IndexOf(group)][parameterIndex];
        var s = AdamWScalars.For(Options, group.LearningRate, group.WeightDecay, group.StepCount);
        var param = p.Value.Span;
        var grad = p.Grad.Span;
        Span<float> m = stackalloc float[DynamicQuantization.BlockSize];
        Span<float> v = stackalloc float[DynamicQuantization.BlockSize];
        for (int b = 0, start = 0; start < param.Length; b++, start += DynamicQuantization.BlockSize)
        {
            int n = Math.Min(DynamicQuantization.BlockSize, param.Length - start);
            var mb = m[..n];
            var vb = v[..n];
            DynamicQuantization.DequantizeBlock(DynamicQuantization.SignedBook, state.M.AsSpan(start, n), state.MAbsmax[b], mb);
            DynamicQuantization.DequantizeBlock(DynamicQuantization.UnsignedBook, state.V.AsSpan(start, n), state.VAbsmax[b], vb);
            AdamW.UpdateElements(param.Slice(start, n), grad.Slice(start, n), mb, vb, s);
            state.MAbsmax[b] = DynamicQuantization.QuantizeBlock(DynamicQuantization.SignedBook, mb, state.M.AsSpan(start, n));
            state.VAbsmax[b] = DynamicQuantization.QuantizeBlock(DynamicQuantization.UnsignedBook, vb, state.V.AsSpan(start, n));
        }
    }

    /// <summary>The dequantized moments of a parameter (for inspection and tests).</summary>
    public (float[] ExpAvg, float[] ExpAvgSq) DequantizedMoments(ParameterGroup group, int parameterIndex)
    {
        var state = _state[IndexOf(group)][parameterIndex];
        var m = new float[state.M.Length];
        var v = new float[state.V.Length];
        DynamicQuantization.Dequantize(DynamicQuantization.SignedBook, state.M, state.MAbsmax, m);
        DynamicQuantization.Dequantize(DynamicQuantization.UnsignedBook, state.V, state.VAbsmax, v);
        return (m, v);
    }

    private IEnumerable<(string Prefix, Moments State)> Entries()
    {
        for (int g = 0; g < Groups.Count; g++)
            for (int i = 0; i < Groups[g].Parameters.Count; i++)
                yield return ($"{Groups[g].Name}/{Groups[g].Parameters[i].Name}", _state[g][i]);
    }

    protected override void SaveExtraState(Dictionary<string, Tensor> state)
    {
        foreach (var (prefix, m) in Entries())
        {
            state[$"{prefix}/{Kinds[0]}.q8"] = Tensor.FromSpan<byte>(DType.U8, m.M, [m.M.Length]);
            state[$"{prefix}/{Kinds[0]}.absmax"] = Tensor.FromArray((float[])m.MAbsmax.Clone(), m.MAbsmax.Length);
            state[$"{prefix}/{Kinds[1]}.q8"] = Tensor.FromSpan<byte>(DType.U8, m.V, [m.V.Length]);
            state[$"{prefix}/{Kinds[1]}.absmax"] = Tensor.FromArray((float[])m.VAbsmax.Clone(), m.VAbsmax.Length);
        }
    }

    protected override void ValidateExtraState(IReadOnlyDictionary<string, Tensor> state)
    {
        foreach (var (prefix, m) in Entries())
            foreach (var kind in Kinds)
            {
                RequireState(state, $"{prefix}/{kind}.q8", DType.U8, m.M.Length);
                var absmax = RequireState(state, $"{prefix}/{kind}.absmax", DType.F32, m.MAbsmax.Length).ReadOnlySpan<float>();
                foreach (var a in absmax)
                    if (!(a >= 0 && float.IsFinite(a))) throw new CudaDreamException($"optimizer state '{prefix}/{kind}.absmax' holds {a}, not a finite non-negative scale");
            }
    }

    protected override void LoadExtraState(IReadOnlyDictionary<string, Tensor> state)
    {
        foreach (var (prefix, m) in Entries())
        {
            state[$"{prefix}/{Kinds[0]}.q8"].ReadOnlySpan<byte>().CopyTo(m.M);
            state[$"{prefix}/{Kinds[0]}.absmax"].ReadOnlySpan<float>().CopyTo(m.MAbsmax);
            state[$"{prefix}/{Kinds[1]}.q8"].ReadOnlySpan<byte>().CopyTo(m.V);
            state[$"{prefix}/{Kinds[1]}.absmax"].ReadOnlySpan<float>().CopyTo(m.VAbsmax);
        }
    }
}
