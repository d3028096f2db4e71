namespace CudaDream.Engine.Training.Optimizers;

/// <summary>SGD options as torch.optim.SGD: momentum μ, dampening τ, Nesterov momentum.</summary>
public sealed record SgdOptions(double Momentum = 0.0, double Dampening = 0.0, bool Nesterov = false);

/// <summary>
/// Stochastic gradient descent with momentum, torch.optim.SGD semantics (PyTorch 1.13): d = g + λθ (L2 weight
/// decay, coupled); first step b = d, later b ← μb + (1−τ)d; d = d + μb with Nesterov (Sutskever et al. 2013),
/// else d = b; θ ← θ − lr·d.
/// </summary>
public sealed class Sgd : Optimizer
{
    public SgdOptions Options { get; }

    public Sgd(IReadOnlyList<ParameterGroup> groups, SgdOptions? options = null) : base(groups, "momentum_buffer")
    {
        Options = options ?? new SgdOptions();
        if (!(Options.Momentum >= 0) || !(Options.Dampening >= 0)) throw new CudaDreamException($"invalid SGD options {Options}");
        if (Options.Nesterov && (Options.Momentum <= 0 || Options.Dampening != 0))
            throw new CudaDreamException("Nesterov momentum requires a momentum and zero dampening");
    }

    protected override void Update(ParameterGroup group, int parameterIndex)
    {
        var p = group.Parameters[parameterIndex];
        var buffer = SlotData[IndexOf(group)][parameterIndex][0];
        var param = p.Value.Span;
        var grad = p.Grad.Span;
        float wd = (float)group.WeightDecay, mu = (float)Options.Momentum, keep = (float)(1 - Options.Dampening), lr = (float)group.LearningRate;
        bool firstStep = group.StepCount == 1; // torch creates the buffer as a copy of d on the first update
        for (int i = 0; i < param.Length; i++)
        {
            float d = wd != 0 ? grad[i] + wd * param[i] : grad[i];
            if (mu != 0)
            {
                float b = firstStep ? d : buffer[i] * mu + keep * d;
                buffer[i] = b;
                d = Options.Nesterov ? d + mu * b : b;
            }
            param[i] = param[i] + -lr * d;
        }
    }
}
