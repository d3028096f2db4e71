namespace CudaDream.Diffusion.Schedulers;

/// <summary>
/// Base of the k-diffusion style schedulers (Euler, Euler ancestral, LMS, Heun): they integrate the probability
/// flow ODE in σ = √((1−ᾱ)/ᾱ) (Karras et al. 2022, eq. 1 with s(t) = 1), with x = x_0 + σ·ε. The UNet takes
/// x/√(σ²+1) (the variance-preserving input it was trained on) and the initial noise is scaled by σ_max.
/// σ of a fractional timestep is linearly interpolated between the training sigmas, as diffusers does.
/// </summary>
public abstract class SigmaScheduler : DiffusionScheduler
{
    /// <summary>σ per step, float32, ending in 0 (Heun: repeated as its timesteps are).</summary>
    protected float[] SigmaValues = [];
    private readonly float[] _trainingSigmas;

    protected SigmaScheduler(SchedulerConfig config, Defaults defaults) : base(config, defaults)
    {
        _trainingSigmas = TrainingSigmas();
        // Before SetTimesteps diffusers holds the training sigmas, reversed, then 0.
        SigmaValues = _trainingSigmas.Reverse().Append(0f).ToArray();
        TimestepValues = Enumerable.Range(0, NumTrainTimesteps).Reverse().Select(t => (double)t).ToArray();
    }

    public override IReadOnlyList<double>? Sigmas => SigmaValues.Select(s => (double)s).ToArray();

    /// <summary>σ_max for "linspace"/"trailing", √(σ_max²+1) for "leading" (diffusers' init_noise_sigma).</summary>
    public override double InitNoiseSigma
    {
        get
        {
            float max = SigmaValues.Max();
            return TimestepSpacing is "linspace" or "trailing" ? max : MathF.Sqrt(max * max + 1f);
        }
    }

    /// <summary>Timesteps and σ grid of Euler/LMS/Heun: interpolated training sigmas, or the Karras grid.</summary>
    protected (double[] Timesteps, double[] Sigmas) InterpolatedSchedule(int n, bool karras)
    {
        var timesteps = DescendingFloatTimesteps(n);
        var sigmas = timesteps.Select(t => ReferenceArithmetic.InterpOnIndex(t, _trainingSigmas)).ToArray();
        if (karras)
        {
            var logSigmas = KarrasSigmas.LogSigmas(_trainingSigmas);
            sigmas = KarrasSigmas.Convert(sigmas, n);
            timesteps = sigmas.Select(s => KarrasSigmas.SigmaToT(s, logSigmas)).ToArray();
        }
        return (timesteps, sigmas);
    }

    /// <summary>The index of a timestep in the schedule (diffusers: exact match required).</summary>
    protected virtual int StepIndex(double timestep)
    {
        int i = IndexOfTimestep(timestep);
        if (i < 0) throw new ArgumentException($"{Name}: timestep {timestep} is not in the schedule");
        return i;
    }

    public override void ScaleModelInput(ReadOnlySpan<float> sample, double timestep, Span<float> destination)
    {
        CheckSameLength(sample.Length, destination.Length);
        float sigma = SigmaValues[StepIndex(timestep)];
        float scale = MathF.Sqrt(sigma * sigma + 1f);
        for (int i = 0; i < sample.Length; i++) destination[i] = sample[i] / scale;
    }

    /// <summary>x + σ_t·n.</summary>
    public override void AddNoise(ReadOnlySpan<float> original, ReadOnlySpan<float> noise, double timestep, Span<float> destination)
    {
        CheckSameLength(original.Length, noise.Length);
        CheckSameLength(original.Length, destination.Length);
        float sigma = SigmaValues[StepIndex(timestep)];
        for (int i = 0; i < original.Length; i++) destination[i] = original[i] + noise[i] * sigma;
    }

    /// <summary>x̂_0 from the model output at noise level σ (Karras et al. 2022, Table 1 preconditioning).</summary>
    protected float PredictOriginal(float x, float modelOutput, float sigma, float vOut, float vSkipDenominator) => Prediction switch
    {
        PredictionType.Epsilon => x - sigma * modelOutput,
        PredictionType.Sample => modelOutput,
        _ => modelOutput * vOut + x / vSkipDenominator,
    };

    /// <summary>The v-prediction factors: c_out = −σ/√(σ²+1) and the c_skip denominator σ²+1.</summary>
    protected static (float Out, float SkipDenominator) VFactors(float sigma)
    {
        float d = sigma * sigma + 1f;
        return (-sigma / MathF.Sqrt(d), d);
    }
}
