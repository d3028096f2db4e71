namespace CudaDream.Engine.Training.Optimizers;

/// <summary>Lion hyper-parameters (Chen et al. 2023's defaults β1 = 0.9, β2 = 0.99).</summary>
public sealed record LionOptions(double Beta1 = 0.9, double Beta2 = 0.99);

/// <summary>
/// Lion, "EvoLved Sign Momentum" (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms", Algorithm 2):
/// c = β1·m + (1−β1)·g;  θ ← θ − η·(sign(c) + λ·θ);  m ← β2·m + (1−β2)·g.
/// The update has the same size in every coordinate (sign(0) = 0), so the paper recommends a learning rate 3–10×
/// smaller and a weight decay λ 3–10× larger than AdamW's. One fp32 state slot (m): half of AdamW's memory.
/// </summary>
public sealed class Lion : Optimizer
{
    public LionOptions Options { get; }

    public Lion(IReadOnlyList<ParameterGroup> groups, LionOptions? options = null) : base(groups, "exp_avg")
    {
        Options = options ?? new LionOptions();
        if (!(Options.Beta1 is >= 0 and < 1) || !(Options.Beta2 is >= 0 and < 1))
            throw new CudaDreamException($"invalid Lion options {Options}: betas must be in [0, 1)");
    }

    protected override void Update(ParameterGroup group, int parameterIndex)
    {
        var p = group.Parameters[parameterIndex];
        var m = SlotData[IndexOf(group)][parameterIndex][0];
        var param = p.Value.Span;
        var grad = p.Grad.Span;
        float b1 = (float)Options.Beta1, b2 = (float)Options.Beta2, lr = (float)group.LearningRate, wd = (float)group.WeightDecay;
        float oneMinusB1 = (float)(1 - Options.Beta1), oneMinusB2 = (float)(1 - Options.Beta2);
        for (int i = 0; i < param.Length; i++)
        {
            float g = grad[i];
            float c = b1 * m[i] + oneMinusB1 * g;
            param[i] -= lr * (MathF.Sign(c) + wd * param[i]);
            m[i] = b2 * m[i] + oneMinusB2 * g;
        }
    }
}
