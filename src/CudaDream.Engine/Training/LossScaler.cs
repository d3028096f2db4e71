using CudaDream.Engine.Tensors;

namespace CudaDream.Engine.Training;

/// <summary>
/// Dynamic loss scaling for fp16 training (Micikevicius et al. 2018, §3.2; the defaults of torch.cuda.amp.GradScaler):
/// the backward is seeded with S instead of 1 so small gradients stay above fp16's underflow; an update whose gradients
/// overflowed (any NaN/Inf) is skipped and S halved; after <see cref="GrowthInterval"/> good updates in a row S doubles.
/// Its state travels in checkpoints, so a resumed run scales exactly as an uninterrupted one.
/// </summary>
public sealed class LossScaler
{
    public const double InitialScale = 65536, GrowthFactor = 2, BackoffFactor = 0.5;
    public const int GrowthInterval = 2000;
    public const string StateKey = "loss_scaler";

    public double Scale { get; private set; } = InitialScale;
    public int GoodSteps { get; private set; }
    public int SkippedUpdates { get; private set; }

    /// <summary>Records one update's outcome; returns whether its gradients may be applied.</summary>
    public bool Update(bool finite)
    {
        if (!finite)
        {
            Scale *= BackoffFactor;
            GoodSteps = 0;
            SkippedUpdates++;
            return false;
        }
        if (++GoodSteps >= GrowthInterval)
        {
            Scale *= GrowthFactor;
            GoodSteps = 0;
        }
        return true;
    }

    /// <summary>Takes the state a device-resident update reported (the device runs the same rule, in float).</summary>
    public void Mirror(double scale, int goodSteps, int skippedUpdates) => (Scale, GoodSteps, SkippedUpdates) = (scale, goodSteps, skippedUpdates);

    /// <summary>The scale as the graph's <c>loss_scale</c> input.</summary>
    public Tensor Input() => Tensor.FromArray([(float)Scale], 1);

    public Tensor State() => Tensor.FromArray([Scale, GoodSteps, SkippedUpdates], 3);

    public void Load(Tensor state, string source)
    {
        var v = state.ToFloat64Array();
        if (v.Length != 3 || !(v[0] > 0) || !double.IsFinite(v[0]) || v[1] < 0 || v[2] < 0)
            throw new InvalidFileException(source, $"'{StateKey}' is not a loss scaler state (scale, good steps, skipped)");
        (Scale, GoodSteps, SkippedUpdates) = (v[0], (int)v[1], (int)v[2]);
    }
}
