using CudaDream.Engine;
using CudaDream.Engine.Randomness;

namespace CudaDream.Diffusion.Schedulers;

/// <summary>
/// What every scheduler shares: the β schedule and ᾱ (float32, as torch computes them), timestep spacing,
/// img2img helpers and ᾱ-based noising. The arithmetic mirrors diffusers 0.21.4 operation by operation in
/// float32 — the precision its tensors and 0-d scalar tensors use — so trajectories agree to rounding.
/// </summary>
public abstract class DiffusionScheduler : IScheduler
{
    /// <summary>Class defaults diffusers gives keys a config file leaves out.</summary>
    protected sealed record Defaults(double BetaStart, double BetaEnd, string BetaSchedule, string TimestepSpacing, bool ClipSample = false);

    public abstract string Name { get; }
    public SchedulerConfig Config { get; }
    public int NumTrainTimesteps { get; }
    public virtual int Order => 1;
    public int NumInferenceSteps { get; protected set; }
    public IReadOnlyList<double> Timesteps => TimestepValues;
    public virtual IReadOnlyList<double>? Sigmas => null;
    public virtual double InitNoiseSigma => 1.0;

    public PredictionType Prediction { get; }
    public string TimestepSpacing { get; }
    public int StepsOffset { get; }

    /// <summary>β_t, α_t = 1 − β_t and ᾱ_t = Π α (float32, cumulative product accumulated in float64 as torch does).</summary>
    public float[] Betas { get; }
    public float[] Alphas { get; }
    public float[] AlphasCumprod { get; }

    protected double[] TimestepValues = [];

    protected DiffusionScheduler(SchedulerConfig config, Defaults defaults)
    {
        Config = config;
        if (config.Thresholding == true)
            throw Invalid("thresholding", "dynamic thresholding is not supported (it is meant for pixel-space models, not latent diffusion)");
        NumTrainTimesteps = config.TrainedBetas?.Length ?? config.NumTrainTimesteps ?? 1000;
        Prediction = (config.PredictionType ?? "epsilon") switch
        {
            "epsilon" => PredictionType.Epsilon,
            "v_prediction" => PredictionType.VPrediction,
            "sample" => PredictionType.Sample,
            var p => throw Invalid("prediction_type", $"'{p}' is not supported"),
        };
        TimestepSpacing = config.TimestepSpacing ?? defaults.TimestepSpacing;
        StepsOffset = config.StepsOffset ?? 0;
        Betas = MakeBetas(config, defaults, NumTrainTimesteps);
        if (config.RescaleBetasZeroSnr == true && SupportsZeroSnrRescale) Betas = RescaleZeroTerminalSnr(Betas);
        Alphas = new float[Betas.Length];
        for (int i = 0; i < Betas.Length; i++) Alphas[i] = 1.0f - Betas[i];
        AlphasCumprod = ReferenceArithmetic.TorchCumprodFloat32(Alphas);
    }

    /// <summary>Only DDIM honours rescale_betas_zero_snr in diffusers 0.21.4.</summary>
    protected virtual bool SupportsZeroSnrRescale => false;

    /// <summary>An error about a config value, naming the config file when it came from one.</summary>
    protected CudaDreamException Invalid(string key, string problem) =>
        Config.SourcePath is { } p ? new InvalidFileException(p, $"{key}: {problem}") : new CudaDreamException($"scheduler config {key}: {problem}");

    /// <summary>
    /// Sets the schedule for <paramref name="numInferenceSteps"/> steps. A count whose schedule leaves the training
    /// timesteps 0..N−1 (e.g. 1000 steps with "leading" spacing and steps_offset 1 reach t = 1000, where diffusers
    /// indexes past ᾱ) is refused as a user error naming the nearest smaller count that fits.
    /// </summary>
    public void SetTimesteps(int numInferenceSteps)
    {
        SetTimestepsCore(numInferenceSteps);
        if (OutsideTrainingRange() is not { } bad) return;
        int fits = 0;
        for (int n = numInferenceSteps - 1; n >= 1 && fits == 0; n--)
        {
            SetTimestepsCore(n);
            if (OutsideTrainingRange() == null) fits = n;
        }
        NumInferenceSteps = 0;
        TimestepValues = [];
        throw new CudaDreamException($"{numInferenceSteps} steps with timestep_spacing {TimestepSpacing} and steps_offset {StepsOffset} reach timestep {bad}, " +
            $"outside the model's training timesteps 0..{NumTrainTimesteps - 1}: " +
            (fits > 0 ? $"the nearest smaller step count that fits is {fits} steps" : "no step count fits; fix steps_offset in scheduler_config.json"));
    }

    protected abstract void SetTimestepsCore(int numInferenceSteps);

    private double? OutsideTrainingRange()
    {
        foreach (var t in TimestepValues)
            if (!(t >= 0 && t <= NumTrainTimesteps - 1)) return t;
        return null;
    }

    public virtual void ScaleModelInput(ReadOnlySpan<float> sample, double timestep, Span<float> destination)
    {
        CheckSameLength(sample.Length, destination.Length);
        sample.CopyTo(destination);
    }

    public abstract void Step(ReadOnlySpan<float> modelOutput, double timestep, Span<float> sample, INoiseSource? noise = null);

    /// <summary>√ᾱ_t·x + √(1−ᾱ_t)·n (DDPM eq. 4; diffusers add_noise).</summary>
    public virtual void AddNoise(ReadOnlySpan<float> original, ReadOnlySpan<float> noise, double timestep, Span<float> destination)
    {
        CheckSameLength(original.Length, noise.Length);
        CheckSameLength(original.Length, destination.Length);
        AddNoiseAtTrainTimestep(original, noise, TrainIndex(timestep), destination);
    }

    protected void AddNoiseAtTrainTimestep(ReadOnlySpan<float> original, ReadOnlySpan<float> noise, int t, Span<float> destination)
    {
        float sqrtAlphaProd = MathF.Sqrt(AlphasCumprod[t]);
        float sqrtOneMinusAlphaProd = MathF.Sqrt(1f - AlphasCumprod[t]);
        for (int i = 0; i < original.Length; i++)
            destination[i] = sqrtAlphaProd * original[i] + sqrtOneMinusAlphaProd * noise[i];
    }

    public Img2ImgTimesteps GetImg2ImgTimesteps(double strength)
    {
        if (!(strength >= 0 && strength <= 1)) throw new CudaDreamException($"img2img strength must be in [0, 1], got {strength}");
        if (NumInferenceSteps <= 0) throw new InvalidOperationException("SetTimesteps must be called first");
        int n = NumInferenceSteps;
        int initTimestep = Math.Min((int)(n * strength), n);
        int tStart = Math.Max(n - initTimestep, 0);
        int start = Math.Min(tStart * Order, TimestepValues.Length);
        var tail = TimestepValues[start..];
        if (tail.Length == 0)
            throw new CudaDreamException($"img2img strength {strength} with {n} steps leaves no denoising step; raise the strength or the step count");
        return new Img2ImgTimesteps(tail, start, n - tStart);
    }

    /// <summary>A timestep as an index into the training schedule (integer-valued schedulers).</summary>
    protected int TrainIndex(double timestep)
    {
        if (timestep != Math.Floor(timestep) || timestep < 0 || timestep >= NumTrainTimesteps)
            throw new ArgumentOutOfRangeException(nameof(timestep), $"timestep {timestep} is not an integer in [0, {NumTrainTimesteps})");
        return (int)timestep;
    }

    /// <summary>diffusers' <c>(self.timesteps == t).nonzero()</c>: first index holding exactly this value, or −1.</summary>
    protected int IndexOfTimestep(double timestep) => Array.IndexOf(TimestepValues, timestep);

    protected void RequireTimesteps()
    {
        if (NumInferenceSteps <= 0) throw new InvalidOperationException($"{Name}: SetTimesteps must be called before stepping");
    }

    protected static void CheckSameLength(int a, int b)
    {
        if (a != b) throw new ArgumentException($"tensor lengths differ: {a} vs {b}");
    }

    protected static void CheckSteps(int numInferenceSteps, int numTrainTimesteps)
    {
        if (numInferenceSteps < 1) throw new CudaDreamException($"number of inference steps must be at least 1, got {numInferenceSteps}");
        if (numInferenceSteps > numTrainTimesteps)
            throw new CudaDreamException($"{numInferenceSteps} inference steps exceed the {numTrainTimesteps} training timesteps");
    }

    /// <summary>
    /// Integer timesteps in descending order, as DDPM/DDIM set_timesteps: "linspace" round(linspace(0, N−1, n)),
    /// "leading" round(arange(n)·(N // n)) + steps_offset, "trailing" round(arange(N, 0, −N/n)) − 1.
    /// </summary>
    protected double[] DescendingIntegerTimesteps(int n)
    {
        int N = NumTrainTimesteps;
        double[] t;
        switch (TimestepSpacing)
        {
            case "linspace":
                t = ReferenceArithmetic.NumpyLinspace(0, N - 1, n).Select(ReferenceArithmetic.Round).Reverse().ToArray();
                break;
            case "leading":
                {
                    int ratio = N / n;
                    t = Enumerable.Range(0, n).Select(i => (double)((long)i * ratio + StepsOffset)).Reverse().ToArray();
                    break;
                }
            case "trailing":
                {
                    double ratio = N / (double)n;
                    t = ReferenceArithmetic.NumpyArange(N, 0, -ratio).Select(x => ReferenceArithmetic.Round(x) - 1).ToArray();
                    break;
                }
            default: throw Invalid("timestep_spacing", $"'{TimestepSpacing}' is not supported");
        }
        return t;
    }

    /// <summary>
    /// k-diffusion float timesteps (Euler, Euler a, LMS, Heun), descending, rounded to float32 as these schedulers
    /// store them: "linspace" linspace(0, N−1, n), "leading" round(arange(n)·(N // n)) + steps_offset,
    /// "trailing" round(arange(N, 0, −N/n)) − 1.
    /// </summary>
    protected double[] DescendingFloatTimesteps(int n)
    {
        int N = NumTrainTimesteps;
        return TimestepSpacing switch
        {
            "linspace" => ReferenceArithmetic.NumpyLinspace(0, N - 1, n).Reverse().Select(x => (double)(float)x).ToArray(),
            "leading" => Enumerable.Range(0, n).Select(i => (double)(float)((long)i * (N / n) + StepsOffset)).Reverse().ToArray(),
            "trailing" => ReferenceArithmetic.NumpyArange(N, 0, -(N / (double)n)).Select(x => (double)(float)(ReferenceArithmetic.Round(x) - 1)).ToArray(),
            _ => throw Invalid("timestep_spacing", $"'{TimestepSpacing}' is not supported"),
        };
    }

    /// <summary>σ_t = √((1−ᾱ_t)/ᾱ_t) per training timestep, in float32 as torch computes it.</summary>
    protected float[] TrainingSigmas()
    {
        var s = new float[AlphasCumprod.Length];
        for (int i = 0; i < s.Length; i++) s[i] = MathF.Sqrt((1f - AlphasCumprod[i]) / AlphasCumprod[i]);
        return s;
    }

    private static float[] MakeBetas(SchedulerConfig c, Defaults d, int n)
    {
        if (c.TrainedBetas != null) return (float[])c.TrainedBetas.Clone();
        double start = c.BetaStart ?? d.BetaStart, end = c.BetaEnd ?? d.BetaEnd;
        switch (c.BetaSchedule ?? d.BetaSchedule)
        {
            case "linear":
                return ReferenceArithmetic.TorchLinspaceFloat32(start, end, n);
            case "scaled_linear":
                {
                    // Latent diffusion's schedule: linspace in √β, then squared (in float32).
                    var r = ReferenceArithmetic.TorchLinspaceFloat32(Math.Sqrt(start), Math.Sqrt(end), n);
                    for (int i = 0; i < n; i++) r[i] = r[i] * r[i];
                    return r;
                }
            case "squaredcos_cap_v2":
                return CosineBetas(n);
            default:
                throw new CudaDreamException($"beta_schedule '{c.BetaSchedule}' is not supported");
        }
    }

    /// <summary>Nichol &amp; Dhariwal 2021 eq. 17: ᾱ(t) = cos²((t + 0.008)/1.008 · π/2), β_i = min(1 − ᾱ(i+1/n)/ᾱ(i/n), 0.999).</summary>
    private static float[] CosineBetas(int n)
    {
        static double AlphaBar(double t) => Math.Pow(Math.Cos((t + 0.008) / 1.008 * Math.PI / 2), 2);
        var r = new float[n];
        for (int i = 0; i < n; i++)
        {
            double t1 = i / (double)n, t2 = (i + 1) / (double)n;
            r[i] = (float)Math.Min(1 - AlphaBar(t2) / AlphaBar(t1), 0.999);
        }
        return r;
    }

    /// <summary>Lin et al. 2023 ("Common Diffusion Noise Schedules and Sample Steps are Flawed"), Algorithm 1.</summary>
    private static float[] RescaleZeroTerminalSnr(float[] betas)
    {
        int n = betas.Length;
        var alphas = new float[n];
        for (int i = 0; i < n; i++) alphas[i] = 1f - betas[i];
        var cum = ReferenceArithmetic.TorchCumprodFloat32(alphas);
        var sqrtBar = cum.Select(MathF.Sqrt).ToArray();
        float first = sqrtBar[0], last = sqrtBar[n - 1];
        float scale = first / (first - last);
        for (int i = 0; i < n; i++) { sqrtBar[i] -= last; sqrtBar[i] *= scale; }
        var bar = sqrtBar.Select(x => x * x).ToArray();
        var r = new float[n];
        r[0] = 1f - bar[0];
        for (int i = 1; i < n; i++) r[i] = 1f - bar[i] / bar[i - 1];
        return r;
    }
}
