namespace CudaDream.Diffusion.Training;

/// <summary>
/// What a run reports as it goes: a phase (class images, caching, training, sampling, saving), the position in
/// it, and during training the loss (raw and smoothed), learning rate, speed, ETA and the fixed-set loss.
/// </summary>
public sealed record TrainingProgress
{
    public required string Phase { get; init; }
    public int Step { get; init; }
    public int Total { get; init; }
    public double? Loss { get; init; }
    public double? SmoothedLoss { get; init; }
    public double? LearningRate { get; init; }
    public double? StepsPerSecond { get; init; }
    public TimeSpan? Eta { get; init; }
    public double? EvalLoss { get; init; }
    /// <summary>The loss on the validation images (fixed timesteps and noise), when measured at this step.</summary>
    public double? ValidationLoss { get; init; }
    /// <summary>A line to show as is (notices, warnings, "wrote …").</summary>
    public string? Message { get; init; }
}

/// <summary>What a finished (or interrupted) run produced.</summary>
public sealed record TrainingResult(string OutputDir, string? LoraPath, string? WeightsPath, int Updates, bool Completed,
    double? LastLoss, IReadOnlyList<(int Step, double Loss)> EvalLosses, string? LastCheckpoint);
