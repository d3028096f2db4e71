namespace CudaDream.Engine.Training.Optimizers;

/// <param name="TotalNorm">The 2-norm of all gradients together, before clipping.</param>
/// <param name="Scale">The factor the gradients were multiplied by (1 when not clipped or not finite).</param>
/// <param name="IsFinite">False when some gradient is NaN or infinite: nothing was scaled, skip the update.</param>
public readonly record struct ClipResult(double TotalNorm, double Scale, bool IsFinite);

/// <summary>Global-norm gradient clipping, torch.nn.utils.clip_grad_norm_ (norm_type 2).</summary>
public static class GradientClipping
{
    /// <summary>
    /// total = √(Σ over all gradients of g²) (accumulated in float64); when total &gt; maxNorm every gradient is
    /// multiplied by maxNorm/(total + 1e-6), as torch does. Unlike torch (which would then scale by NaN or 0), a
    /// non-finite total leaves the gradients untouched and is reported, so the trainer can skip the step.
    /// </summary>
    public static ClipResult ClipByGlobalNorm(IEnumerable<Memory<float>> gradients, double maxNorm)
    {
        if (!(maxNorm > 0)) throw new ArgumentOutOfRangeException(nameof(maxNorm), "max norm must be positive");
        var list = gradients as IReadOnlyList<Memory<float>> ?? gradients.ToList();
        double sumSquares = 0;
        foreach (var g in list)
            foreach (var x in g.Span) sumSquares += (double)x * x;
        double total = Math.Sqrt(sumSquares);
        if (!double.IsFinite(total)) return new ClipResult(total, 1.0, false);
        double coef = maxNorm / (total + 1e-6);
        if (coef >= 1.0) return new ClipResult(total, 1.0, true);
        float c = (float)coef;
        foreach (var g in list)
        {
            var s = g.Span;
            for (int i = 0; i < s.Length; i++) s[i] *= c;
        }
        return new ClipResult(total, coef, true);
    }

    public static ClipResult ClipByGlobalNorm(Optimizer optimizer, double maxNorm) =>
        ClipByGlobalNorm(optimizer.Groups.SelectMany(g => g.Parameters).Select(p => p.Grad), maxNorm);
}

/// <summary>
/// Gradient accumulation over micro-batches: the update uses the mean of the micro-batch gradients, as dividing
/// each micro-batch loss by their count does (accelerate / diffusers' training scripts).
/// </summary>
public sealed class GradientAccumulation
{
    public int MicroSteps { get; }

    public GradientAccumulation(int microSteps)
    {
        if (microSteps < 1) throw new CudaDreamException($"gradient accumulation steps must be at least 1, got {microSteps}");
        MicroSteps = microSteps;
    }

    /// <summary>Whether micro-step number <paramref name="microStep"/> (0-based) completes an update.</summary>
    public bool IsUpdateStep(long microStep) => (microStep + 1) % MicroSteps == 0;

    /// <summary>Index of the micro-step within its update (0 = first: overwrite instead of add).</summary>
    public int Position(long microStep) => (int)(microStep % MicroSteps);

    /// <summary>accumulated = (first ? 0 : accumulated) + micro / MicroSteps.</summary>
    public void Accumulate(ReadOnlySpan<float> microGradient, Span<float> accumulated, bool first)
    {
        if (microGradient.Length != accumulated.Length) throw new ArgumentException("gradient lengths differ");
        float scale = 1f / MicroSteps;
        for (int i = 0; i < accumulated.Length; i++)
            accumulated[i] = first ? microGradient[i] * scale : accumulated[i] + microGradient[i] * scale;
    }
}
