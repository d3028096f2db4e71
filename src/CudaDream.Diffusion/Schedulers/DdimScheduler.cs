using CudaDream.Engine.Randomness;

namespace CudaDream.Diffusion.Schedulers;

/// <summary>
/// DDIM (Song, Meng, Ermon 2021, "Denoising Diffusion Implicit Models") as diffusers' DDIMScheduler, eq. 12:
/// x_{t−1} = √ᾱ_{t−1}·x̂_0 + √(1−ᾱ_{t−1}−σ_t²)·ε̂ + σ_t·z, with σ_t(η) = η·√((1−ᾱ_{t−1})/(1−ᾱ_t))·√(1−ᾱ_t/ᾱ_{t−1})
/// (eq. 16). η = 0 (the default, and what Stable Diffusion pipelines pass) is deterministic.
/// Class defaults (diffusers): β 0.0001..0.02 linear, clip_sample true, set_alpha_to_one true, "leading".
/// </summary>
public sealed class DdimScheduler : DiffusionScheduler
{
    private static readonly Defaults ClassDefaults = new(0.0001, 0.02, "linear", "leading", ClipSample: true);

    private readonly float _finalAlphaCumprod;
    private readonly bool _clipSample;
    private readonly float _clipRange;

    public override string Name => "ddim";
    /// <summary>η of eq. 16 (0 = deterministic DDIM, 1 = DDPM-like).</summary>
    public double Eta { get; }

    protected override bool SupportsZeroSnrRescale => true;

    public DdimScheduler(SchedulerConfig config, double eta = 0.0) : base(config, ClassDefaults)
    {
        if (!(eta >= 0)) throw new ArgumentOutOfRangeException(nameof(eta), "eta must be ≥ 0");
        Eta = eta;
        // The step after the last looks at ᾱ_{−1}: 1 (the clean image) or ᾱ_0, as the model was trained.
        _finalAlphaCumprod = (config.SetAlphaToOne ?? true) ? 1f : AlphasCumprod[0];
        _clipSample = config.ClipSample ?? ClassDefaults.ClipSample;
        _clipRange = (float)(config.ClipSampleRange ?? 1.0);
    }

    protected override void SetTimestepsCore(int numInferenceSteps)
    {
        CheckSteps(numInferenceSteps, NumTrainTimesteps);
        NumInferenceSteps = numInferenceSteps;
        TimestepValues = DescendingIntegerTimesteps(numInferenceSteps);
    }

    public override void Step(ReadOnlySpan<float> modelOutput, double timestep, Span<float> sample, INoiseSource? noise = null)
    {
        RequireTimesteps();
        CheckSameLength(modelOutput.Length, sample.Length);
        int t = TrainIndex(timestep);
        // 1. Previous timestep: one stride down (diffusers uses N // n whatever the spacing).
        int prevT = t - NumTrainTimesteps / NumInferenceSteps;

        // 2. ᾱ_t and ᾱ_{t−1}.
        float alphaProdT = AlphasCumprod[t];
        float alphaProdPrev = prevT >= 0 ? AlphasCumprod[prevT] : _finalAlphaCumprod;
        float betaProdT = 1f - alphaProdT;
        float sqrtAlphaProd = MathF.Sqrt(alphaProdT), sqrtBetaProd = MathF.Sqrt(betaProdT);

        // 5. σ_t(η), eq. 16.
        float variance = (1f - alphaProdPrev) / betaProdT * (1f - alphaProdT / alphaProdPrev);
        float stdDev = (float)Eta * MathF.Sqrt(variance);
        float directionCoeff = MathF.Sqrt(1f - alphaProdPrev - stdDev * stdDev);
        float sqrtAlphaPrev = MathF.Sqrt(alphaProdPrev);

        float[]? z = null;
        if (Eta > 0)
        {
            if (noise is null) throw new InvalidOperationException("DDIM with eta > 0 adds noise: pass a noise source");
            z = new float[sample.Length];
            noise.Fill(z);
        }

        for (int i = 0; i < sample.Length; i++)
        {
            float x = sample[i], m = modelOutput[i];
            // 3. x̂_0 and ε̂ (eq. 12's "predicted x_0").
            float x0, eps;
            switch (Prediction)
            {
                case PredictionType.Epsilon: x0 = (x - sqrtBetaProd * m) / sqrtAlphaProd; eps = m; break;
                case PredictionType.Sample: x0 = m; eps = (x - sqrtAlphaProd * x0) / sqrtBetaProd; break;
                default: x0 = sqrtAlphaProd * x - sqrtBetaProd * m; eps = sqrtAlphaProd * m + sqrtBetaProd * x; break;
            }
            // 4. Clip x̂_0 (ε̂ is not re-derived: use_clipped_model_output = false as in the pipelines).
            if (_clipSample) x0 = Math.Clamp(x0, -_clipRange, _clipRange);
            // 6–7. Direction pointing to x_t, then x_{t−1}.
            float prev = sqrtAlphaPrev * x0 + directionCoeff * eps;
            if (z != null) prev += stdDev * z[i];
            sample[i] = prev;
        }
    }
}
