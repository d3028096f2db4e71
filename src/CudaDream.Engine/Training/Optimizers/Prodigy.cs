using CudaDream.Engine.Tensors;

namespace CudaDream.Engine.Training.Optimizers;

/// <summary>
/// Prodigy hyper-parameters: Adam's betas and ε, the initial distance estimate d0 (10⁻⁶ in the paper), a multiplier of
/// the estimate (d_coef, 1 in the paper), and two options of the authors' implementation that kohya users set:
/// Adam's bias correction folded into the step size, and the safeguard warm-up (the learning rate left out of s).
/// </summary>
public sealed record ProdigyOptions(double Beta1 = 0.9, double Beta2 = 0.999, double Epsilon = 1e-8, double D0 = 1e-6, double DCoef = 1.0,
    bool UseBiasCorrection = false, bool SafeguardWarmup = false);

/// <summary>
/// Prodigy (Mishchenko &amp; Defazio 2023, "Prodigy: An Expeditiously Adaptive Parameter-Free Learner", Algorithm 3,
/// the Adam version). With γ_k the group's learning rate (a multiplier: 1 is the usual value) and d_k the current
/// estimate of the distance to the solution, every update k does
/// <code>
///   m ← β1·m + (1−β1)·d_k·g            v ← β2·v + (1−β2)·d_k²·g²
///   r ← √β2·r + (1−√β2)·γ_k·d_k²·⟨g, x0 − x⟩      s ← √β2·s + (1−√β2)·γ_k·d_k²·g
///   d̂ = r / ‖s‖₁     d_{k+1} = max(d_k, d_coef·d̂)
///   x ← x − γ_k·d_k·m / (√v + d_k·ε)
/// </code>
/// over all parameters of all groups together (r and d are shared). Weight decay is decoupled, scaled like the step:
/// x ← x·(1 − γ_k·d_k·λ) before the step. With bias correction γ_k is multiplied by √(1−β2ᵗ)/(1−β1ᵗ); with the
/// safeguard warm-up s accumulates d_k²·g without γ_k. r and s are kept divided by d0 (their ratio is unchanged) so
/// that the d_k² ≈ 10⁻¹² of the first steps stays far from float32's denormals.
/// State: m, v, s and x0 per parameter (fp32), d and r (fp64, <c>prodigy.d</c>, <c>prodigy.r</c>).
/// </summary>
public sealed class Prodigy : Optimizer
{
    private const int M = 0, V = 1, S = 2, X0 = 3;
    public ProdigyOptions Options { get; }
    /// <summary>The current estimate d_k.</summary>
    public double D { get; private set; }
    private double _r, _stepNumerator, _sNorm;
    private bool _x0Taken;

    public Prodigy(IReadOnlyList<ParameterGroup> groups, ProdigyOptions? options = null) : base(groups, "exp_avg", "exp_avg_sq", "s", "p0")
    {
        Options = options ?? new ProdigyOptions();
        if (!(Options.Beta1 is >= 0 and < 1) || !(Options.Beta2 is >= 0 and < 1) || !(Options.Epsilon >= 0) || !(Options.D0 > 0) || !(Options.DCoef > 0))
            throw new CudaDreamException($"invalid Prodigy options {Options}: betas in [0, 1), epsilon ≥ 0, d0 and d_coef positive");
        D = Options.D0;
    }

    protected override void BeginStep()
    {
        // x0 is the starting point: taken at the first update (the parameters may be loaded after construction).
        if (!_x0Taken)
        {
            for (int g = 0; g < Groups.Count; g++)
                for (int i = 0; i < Groups[g].Parameters.Count; i++)
                    if (Groups[g].StepCount == 0) Groups[g].Parameters[i].Value.Span.CopyTo(SlotData[g][i][X0]);
            _x0Taken = true;
        }
        _stepNumerator = 0;
        _sNorm = 0;
    }

    private double StepSize(ParameterGroup group)
    {
        double lr = group.LearningRate;
        if (!Options.UseBiasCorrection) return lr;
        long t = group.StepCount;
        return lr * Math.Sqrt(1 - Math.Pow(Options.Beta2, t)) / (1 - Math.Pow(Options.Beta1, t));
    }

    protected override void Update(ParameterGroup group, int parameterIndex)
    {
        var p = group.Parameters[parameterIndex];
        var slots = SlotData[IndexOf(group)][parameterIndex];
        var (m, v, s, x0) = (slots[M], slots[V], slots[S], slots[X0]);
        var param = p.Value.Span;
        var grad = p.Grad.Span;
        double gamma = StepSize(group), d = D, sqrtBeta2 = Math.Sqrt(Options.Beta2);
        float b1 = (float)Options.Beta1, b2 = (float)Options.Beta2, b3 = (float)sqrtBeta2;
        float mScale = (float)((1 - Options.Beta1) * d), vScale = (float)((1 - Options.Beta2) * d * d);
        float sScale = (float)((1 - sqrtBeta2) * (Options.SafeguardWarmup ? 1 : gamma) * d * d / Options.D0);
        float stepSize = (float)(gamma * d), epsilon = (float)(d * Options.Epsilon), decay = (float)(1 - gamma * d * group.WeightDecay);
        double dot = 0, norm = 0;
        for (int i = 0; i < param.Length; i++)
        {
            float g = grad[i];
            dot += (double)g * (x0[i] - param[i]);
            m[i] = b1 * m[i] + mScale * g;
            v[i] = b2 * v[i] + vScale * g * g;
            s[i] = b3 * s[i] + sScale * g;
            norm += Math.Abs(s[i]);
            param[i] = param[i] * decay - stepSize * m[i] / (MathF.Sqrt(v[i]) + epsilon);
        }
        _stepNumerator += (1 - sqrtBeta2) * gamma * d * d / Options.D0 * dot;
        _sNorm += norm;
    }

    protected override void EndStep()
    {
        _r = Math.Sqrt(Options.Beta2) * _r + _stepNumerator;
        if (_sNorm > 0 && double.IsFinite(_r)) D = Math.Max(D, Options.DCoef * _r / _sNorm);
    }

    protected override void SaveExtraState(Dictionary<string, Tensor> state)
    {
        state["prodigy.d"] = Tensor.FromArray(new[] { D }, 1);
        state["prodigy.r"] = Tensor.FromArray(new[] { _r }, 1);
    }

    protected override void ValidateExtraState(IReadOnlyDictionary<string, Tensor> state)
    {
        double d = RequireState(state, "prodigy.d", DType.F64, 1).ReadOnlySpan<double>()[0];
        double r = RequireState(state, "prodigy.r", DType.F64, 1).ReadOnlySpan<double>()[0];
        if (!(d > 0 && double.IsFinite(d)) || !double.IsFinite(r)) throw new CudaDreamException($"optimizer state prodigy.d = {d}, prodigy.r = {r}: not a valid Prodigy state");
    }

    protected override void LoadExtraState(IReadOnlyDictionary<string, Tensor> state)
    {
        D = state["prodigy.d"].ReadOnlySpan<double>()[0];
        _r = state["prodigy.r"].ReadOnlySpan<double>()[0];
        // A resumed run continues from the checkpoint's x0 (in the p0 slots), unless it is at step 0.
        _x0Taken = Groups.All(g => g.StepCount > 0);
    }
}
