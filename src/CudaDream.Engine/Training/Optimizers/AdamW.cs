namespace CudaDream.Engine.Training.Optimizers;

/// <summary>AdamW hyper-parameters (torch.optim.AdamW defaults; per-group learning rate and weight decay live on the groups).</summary>
public sealed record AdamWOptions(double Beta1 = 0.9, double Beta2 = 0.999, double Epsilon = 1e-8);

/// <summary>
/// The scalars of one AdamW update, computed in float64 from the step number and rounded to float32 — the
/// argument list of the element-wise kernel (<see cref="AdamW.UpdateElements"/>; the CUDA kernel takes the same).
/// </summary>
public readonly record struct AdamWScalars(float DecayFactor, float Beta1, float OneMinusBeta1, float Beta2, float OneMinusBeta2, float StepSize, float BiasCorrection2Sqrt, float Epsilon)
{
    /// <summary>For update number <paramref name="step"/> (1-based) at learning rate lr and weight decay wd.</summary>
    public static AdamWScalars For(AdamWOptions o, double lr, double weightDecay, long step)
    {
        if (step < 1) throw new ArgumentOutOfRangeException(nameof(step), "AdamW steps count from 1");
        double biasCorrection1 = 1 - Math.Pow(o.Beta1, step);
        double biasCorrection2 = 1 - Math.Pow(o.Beta2, step);
        return new AdamWScalars(
            DecayFactor: (float)(1 - lr * weightDecay),
            Beta1: (float)o.Beta1, OneMinusBeta1: (float)(1 - o.Beta1),
            Beta2: (float)o.Beta2, OneMinusBeta2: (float)(1 - o.Beta2),
            StepSize: (float)(lr / biasCorrection1),
            BiasCorrection2Sqrt: (float)Math.Sqrt(biasCorrection2),
            Epsilon: (float)o.Epsilon);
    }
}

/// <summary>
/// AdamW (Loshchilov &amp; Hutter 2019, "Decoupled Weight Decay Regularization", Algorithm 2) with
/// torch.optim.AdamW's exact sequence (PyTorch 1.13, amsgrad off): θ ← θ·(1 − lr·λ); m ← β₁m + (1−β₁)g;
/// v ← β₂v + (1−β₂)g²; θ ← θ − (lr/(1−β₁ᵗ))·m / (√v/√(1−β₂ᵗ) + ε). Note ε is added after the bias-corrected
/// square root, as torch does. State m, v is float32; t counts the group's updates.
/// </summary>
public sealed class AdamW : Optimizer
{
    public AdamWOptions Options { get; }

    public AdamW(IReadOnlyList<ParameterGroup> groups, AdamWOptions? options = null) : base(groups, "exp_avg", "exp_avg_sq")
    {
        Options = options ?? new AdamWOptions();
        if (!(Options.Beta1 is >= 0 and < 1) || !(Options.Beta2 is >= 0 and < 1) || !(Options.Epsilon >= 0))
            throw new CudaDreamException($"invalid AdamW options {Options}: betas must be in [0, 1) and epsilon ≥ 0");
    }

    protected override void Update(ParameterGroup group, int parameterIndex)
    {
        var p = group.Parameters[parameterIndex];
        var state = SlotData[IndexOf(group)][parameterIndex];
        var s = AdamWScalars.For(Options, group.LearningRate, group.WeightDecay, group.StepCount);
        UpdateElements(p.Value.Span, p.Grad.Span, state[0], state[1], s);
    }

    /// <summary>The element-wise update, float32, in torch's operation order.</summary>
    public static void UpdateElements(Span<float> param, ReadOnlySpan<float> grad, Span<float> expAvg, Span<float> expAvgSq, in AdamWScalars s)
    {
        if (grad.Length != param.Length || expAvg.Length != param.Length || expAvgSq.Length != param.Length)
            throw new ArgumentException("AdamW: parameter, gradient and state lengths differ");
        for (int i = 0; i < param.Length; i++)
        {
            float g = grad[i];
            float p = param[i] * s.DecayFactor;
            float m = expAvg[i] * s.Beta1 + s.OneMinusBeta1 * g;
            float v = expAvgSq[i] * s.Beta2 + s.OneMinusBeta2 * g * g;
            float denom = MathF.Sqrt(v) / s.BiasCorrection2Sqrt + s.Epsilon;
            param[i] = p + -s.StepSize * m / denom;
            expAvg[i] = m;
            expAvgSq[i] = v;
        }
    }
}
