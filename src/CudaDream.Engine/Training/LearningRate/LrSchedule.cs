namespace CudaDream.Engine.Training.LearningRate;

/// <summary>The schedules of diffusers' <c>get_scheduler</c> (diffusers/optimization.py).</summary>
public enum LrScheduleKind { Constant, ConstantWithWarmup, Linear, Cosine, CosineWithRestarts, Polynomial }

/// <param name="Kind">Which curve.</param>
/// <param name="WarmupSteps">Linear ramp 0 → 1 over this many steps (all kinds but Constant).</param>
/// <param name="TotalSteps">Optimizer steps of the run (the curves end here).</param>
/// <param name="NumCycles">Cosine: half-waves ×2 (diffusers' get_scheduler always uses 0.5 = one half wave);
/// cosine_with_restarts: number of hard restarts (diffusers' default 1). Null = that default.</param>
/// <param name="Power">Polynomial decay power (diffusers' default 1.0 = linear).</param>
/// <param name="LrEnd">Polynomial: the final learning rate (absolute, not a multiplier; default 1e-7).</param>
/// <param name="BaseLearningRate">The optimizer's default learning rate; polynomial needs it because diffusers
/// turns LrEnd into a multiplier by dividing by it.</param>
public sealed record LrScheduleOptions(
    LrScheduleKind Kind,
    int WarmupSteps = 0,
    int TotalSteps = 0,
    double? NumCycles = null,
    double Power = 1.0,
    double LrEnd = 1e-7,
    double BaseLearningRate = 0.0);

/// <summary>
/// A learning-rate multiplier as a pure function of the optimizer step (the number of optimizer updates already
/// made: update k uses Multiplier(k), as torch's LambdaLR stepped after each optimizer.step()). Nothing is
/// stored, so a resumed run gets the same rates. The learning rate of a parameter group is its base rate times
/// the multiplier.
/// </summary>
public sealed class LrSchedule
{
    public LrScheduleOptions Options { get; }

    public LrSchedule(LrScheduleOptions options)
    {
        if (options.WarmupSteps < 0) throw new CudaDreamException($"warmup steps must not be negative, got {options.WarmupSteps}");
        if (options.TotalSteps < 0) throw new CudaDreamException($"total steps must not be negative, got {options.TotalSteps}");
        if (options.NumCycles is { } c && !(c > 0 && double.IsFinite(c))) throw new CudaDreamException($"num_cycles must be positive, got {c}");
        if (options.Kind == LrScheduleKind.Polynomial && !(options.BaseLearningRate > options.LrEnd))
            throw new CudaDreamException($"polynomial schedule: lr_end ({options.LrEnd}) must be smaller than the initial learning rate ({options.BaseLearningRate})");
        Options = options;
    }

    /// <summary>diffusers' names: constant, constant_with_warmup, linear, cosine, cosine_with_restarts, polynomial.</summary>
    public static LrScheduleKind ParseKind(string name) => name switch
    {
        "constant" => LrScheduleKind.Constant,
        "constant_with_warmup" => LrScheduleKind.ConstantWithWarmup,
        "linear" => LrScheduleKind.Linear,
        "cosine" => LrScheduleKind.Cosine,
        "cosine_with_restarts" => LrScheduleKind.CosineWithRestarts,
        "polynomial" => LrScheduleKind.Polynomial,
        _ => throw new CudaDreamException($"unknown learning-rate schedule '{name}'; choose constant, constant_with_warmup, linear, cosine, cosine_with_restarts or polynomial"),
    };

    public double LearningRate(double baseLearningRate, int step) => baseLearningRate * Multiplier(step);

    public double Multiplier(int step)
    {
        var o = Options;
        if (o.Kind == LrScheduleKind.Constant) return 1.0;
        if (step < o.WarmupSteps) return step / Math.Max(1.0, o.WarmupSteps);
        double decaySteps = Math.Max(1, o.TotalSteps - o.WarmupSteps);
        double progress = (step - o.WarmupSteps) / decaySteps;
        switch (o.Kind)
        {
            case LrScheduleKind.ConstantWithWarmup:
                return 1.0;
            case LrScheduleKind.Linear:
                return Math.Max(0.0, (o.TotalSteps - step) / decaySteps);
            case LrScheduleKind.Cosine:
                return Math.Max(0.0, 0.5 * (1.0 + Math.Cos(Math.PI * (o.NumCycles ?? 0.5) * 2.0 * progress)));
            case LrScheduleKind.CosineWithRestarts:
                if (progress >= 1.0) return 0.0;
                return Math.Max(0.0, 0.5 * (1.0 + Math.Cos(Math.PI * (((o.NumCycles ?? 1.0) * progress) % 1.0))));
            case LrScheduleKind.Polynomial:
                {
                    double lrInit = o.BaseLearningRate;
                    if (step > o.TotalSteps) return o.LrEnd / lrInit;
                    double lrRange = lrInit - o.LrEnd;
                    double pctRemaining = 1 - (step - o.WarmupSteps) / (double)(o.TotalSteps - o.WarmupSteps);
                    double decay = lrRange * Math.Pow(pctRemaining, o.Power) + o.LrEnd;
                    return decay / lrInit;
                }
            default:
                throw new ArgumentOutOfRangeException(nameof(o.Kind));
        }
    }
}
