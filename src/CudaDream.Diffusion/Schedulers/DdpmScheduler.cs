using CudaDream.Engine.Randomness;

namespace CudaDream.Diffusion.Schedulers;

/// <summary>
/// DDPM (Ho, Jain, Abbeel 2020, "Denoising Diffusion Probabilistic Models") as diffusers' DDPMScheduler:
/// the forward process used for training (eq. 4: x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε, and the v-prediction target of
/// Salimans &amp; Ho 2022 §4: v = √ᾱ_t·ε − √(1−ᾱ_t)·x_0), and ancestral sampling with the posterior
/// q(x_{t−1} | x_t, x_0) of eqs. 6–7 (mean μ̃_t, variance β̃_t = (1−ᾱ_{t−1})/(1−ᾱ_t)·β_t).
/// Class defaults (diffusers): β 0.0001..0.02 linear, clip_sample true, variance_type fixed_small, "leading".
/// </summary>
public sealed class DdpmScheduler : DiffusionScheduler
{
    private static readonly Defaults ClassDefaults = new(0.0001, 0.02, "linear", "leading", ClipSample: true);

    private readonly bool _clipSample;
    private readonly float _clipRange;
    private readonly string _varianceType;
    private int? _inferenceSteps;

    public override string Name => "ddpm";

    public DdpmScheduler(SchedulerConfig config) : base(config, ClassDefaults)
    {
        _clipSample = config.ClipSample ?? ClassDefaults.ClipSample;
        _clipRange = (float)(config.ClipSampleRange ?? 1.0);
        _varianceType = config.VarianceType ?? "fixed_small";
        if (_varianceType is "learned" or "learned_range")
            throw Invalid("variance_type", $"'{_varianceType}' needs a model that predicts its variance; not supported");
        // Without SetTimesteps diffusers steps through every training timestep (t → t−1).
        TimestepValues = Enumerable.Range(0, NumTrainTimesteps).Reverse().Select(t => (double)t).ToArray();
    }

    protected override void SetTimestepsCore(int numInferenceSteps)
    {
        CheckSteps(numInferenceSteps, NumTrainTimesteps);
        _inferenceSteps = numInferenceSteps;
        NumInferenceSteps = numInferenceSteps;
        TimestepValues = DescendingIntegerTimesteps(numInferenceSteps);
    }

    private int PreviousTimestep(int t) => t - NumTrainTimesteps / (_inferenceSteps ?? NumTrainTimesteps);

    public override void Step(ReadOnlySpan<float> modelOutput, double timestep, Span<float> sample, INoiseSource? noise = null)
    {
        CheckSameLength(modelOutput.Length, sample.Length);
        int t = TrainIndex(timestep);
        int prevT = PreviousTimestep(t);

        // 1. ᾱ_t, ᾱ_{t−1}, β_t of this (possibly strided) step.
        float alphaProdT = AlphasCumprod[t];
        float alphaProdPrev = prevT >= 0 ? AlphasCumprod[prevT] : 1f;
        float betaProdT = 1f - alphaProdT;
        float betaProdPrev = 1f - alphaProdPrev;
        float currentAlpha = alphaProdT / alphaProdPrev;
        float currentBeta = 1f - currentAlpha;

        // 4. Posterior mean coefficients, eq. 7: μ̃ = √ᾱ_{t−1}·β_t/(1−ᾱ_t)·x_0 + √α_t·(1−ᾱ_{t−1})/(1−ᾱ_t)·x_t.
        float x0Coeff = MathF.Sqrt(alphaProdPrev) * currentBeta / betaProdT;
        float sampleCoeff = MathF.Sqrt(currentAlpha) * betaProdPrev / betaProdT;
        float sqrtAlphaProd = MathF.Sqrt(alphaProdT), sqrtBetaProd = MathF.Sqrt(betaProdT);

        float[]? variance = null;
        float stdScale = 0;
        if (t > 0)
        {
            if (noise is null) throw new InvalidOperationException("DDPM's step adds noise for t > 0: pass a noise source");
            variance = new float[sample.Length];
            noise.Fill(variance);
            stdScale = NoiseScale(t, prevT, alphaProdT, alphaProdPrev, currentBeta);
        }

        for (int i = 0; i < sample.Length; i++)
        {
            float x = sample[i], m = modelOutput[i];
            // 2. x_0 from the prediction (eq. 15 for ε).
            float x0 = Prediction switch
            {
                PredictionType.Epsilon => (x - sqrtBetaProd * m) / sqrtAlphaProd,
                PredictionType.Sample => m,
                _ => sqrtAlphaProd * x - sqrtBetaProd * m,
            };
            // 3. Clipping of x_0.
            if (_clipSample) x0 = Math.Clamp(x0, -_clipRange, _clipRange);
            float prev = x0Coeff * x0 + sampleCoeff * x;
            if (variance != null) prev += stdScale * variance[i];
            sample[i] = prev;
        }
    }

    /// <summary>The factor of the unit noise: √β̃_t (fixed_small), √β_t (fixed_large), or their log-space variants.</summary>
    private float NoiseScale(int t, int prevT, float alphaProdT, float alphaProdPrev, float currentBeta)
    {
        float variance = (1f - alphaProdPrev) / (1f - alphaProdT) * currentBeta;
        variance = MathF.Max(variance, 1e-20f);
        return _varianceType switch
        {
            "fixed_small" => MathF.Sqrt(variance),
            "fixed_small_log" => MathF.Exp(0.5f * MathF.Log(variance)),
            "fixed_large" => MathF.Sqrt(currentBeta),
            "fixed_large_log" => MathF.Sqrt(MathF.Log(currentBeta)),
            _ => throw Invalid("variance_type", $"'{_varianceType}' is not supported"),
        };
    }

    /// <summary>Training noise, eq. 4, one timestep per batch row: x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε.</summary>
    public void AddNoise(ReadOnlySpan<float> original, ReadOnlySpan<float> noise, ReadOnlySpan<int> timesteps, Span<float> destination)
    {
        CheckSameLength(original.Length, noise.Length);
        CheckSameLength(original.Length, destination.Length);
        int row = RowLength(original.Length, timesteps.Length);
        for (int b = 0; b < timesteps.Length; b++)
        {
            int t = TrainIndex(timesteps[b]);
            AddNoiseAtTrainTimestep(original.Slice(b * row, row), noise.Slice(b * row, row), t, destination.Slice(b * row, row));
        }
    }

    /// <summary>The v-prediction target (Salimans &amp; Ho 2022): v = √ᾱ_t·ε − √(1−ᾱ_t)·x_0, one timestep per batch row.</summary>
    public void GetVelocity(ReadOnlySpan<float> original, ReadOnlySpan<float> noise, ReadOnlySpan<int> timesteps, Span<float> destination)
    {
        CheckSameLength(original.Length, noise.Length);
        CheckSameLength(original.Length, destination.Length);
        int row = RowLength(original.Length, timesteps.Length);
        for (int b = 0; b < timesteps.Length; b++)
        {
            int t = TrainIndex(timesteps[b]);
            float sa = MathF.Sqrt(AlphasCumprod[t]), sb = MathF.Sqrt(1f - AlphasCumprod[t]);
            for (int i = b * row; i < (b + 1) * row; i++) destination[i] = sa * noise[i] - sb * original[i];
        }
    }

    /// <summary>The regression target of the configured prediction type: ε, v, or x_0.</summary>
    public void TrainingTarget(ReadOnlySpan<float> original, ReadOnlySpan<float> noise, ReadOnlySpan<int> timesteps, Span<float> destination)
    {
        switch (Prediction)
        {
            case PredictionType.Epsilon: noise.CopyTo(destination); break;
            case PredictionType.Sample: original.CopyTo(destination); break;
            default: GetVelocity(original, noise, timesteps, destination); break;
        }
    }

    private static int RowLength(int total, int rows)
    {
        if (rows <= 0 || total % rows != 0) throw new ArgumentException($"{total} elements do not split into {rows} batch rows");
        return total / rows;
    }
}
