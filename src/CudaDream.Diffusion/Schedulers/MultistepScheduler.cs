namespace CudaDream.Diffusion.Schedulers;

/// <summary>
/// Shared by the exponential-integrator solvers (DPM-Solver, UniPC), which work in the half-log-SNR
/// λ_t = log α_t − log σ_t with α_t = √ᾱ_t, σ_t = √(1−ᾱ_t) (Lu et al. 2022, §3.1), all float32 per training
/// timestep as diffusers holds them, and with integer timesteps.
/// </summary>
public abstract class MultistepScheduler : DiffusionScheduler
{
    protected readonly float[] AlphaT, SigmaT, LambdaT;
    protected readonly bool UseKarras;
    private double[] _sigmas;

    protected MultistepScheduler(SchedulerConfig config, Defaults defaults) : base(config, defaults)
    {
        int n = AlphasCumprod.Length;
        AlphaT = new float[n]; SigmaT = new float[n]; LambdaT = new float[n];
        for (int i = 0; i < n; i++)
        {
            AlphaT[i] = MathF.Sqrt(AlphasCumprod[i]);
            SigmaT[i] = MathF.Sqrt(1f - AlphasCumprod[i]);
            LambdaT[i] = (float)Math.Log(AlphaT[i]) - (float)Math.Log(SigmaT[i]);
        }
        UseKarras = config.UseKarrasSigmas ?? false;
        _sigmas = TrainingSigmas().Select(s => (double)s).ToArray();
        TimestepValues = Enumerable.Range(0, NumTrainTimesteps).Reverse().Select(t => (double)t).ToArray();
    }

    /// <summary>The Karras grid (ascending, as diffusers 0.21.4 keeps it) or, without it, the training sigmas.</summary>
    public override IReadOnlyList<double>? Sigmas => _sigmas;

    /// <summary>
    /// Integer timesteps over n+1 grid points with the final one (t = 0 side) dropped; with Karras sigmas the
    /// timesteps are the rounded preimages of the Karras grid instead. Duplicates are removed keeping order
    /// (diffusers' np.unique(return_index) trick), so Timesteps can be shorter than n.
    /// </summary>
    /// <summary>
    /// The model output as the solver's variable: x̂_0 when <paramref name="dataPrediction"/> (DPM-Solver++, UniPC's
    /// predict_x0), else ε̂ — from ε-, v- or x_0-predicting models, with x_t = α_t·x_0 + σ_t·ε.
    /// </summary>
    protected float[] ConvertModelOutput(ReadOnlySpan<float> m, int t, ReadOnlySpan<float> x, bool dataPrediction)
    {
        float a = AlphaT[t], s = SigmaT[t];
        var r = new float[m.Length];
        for (int i = 0; i < m.Length; i++)
        {
            r[i] = (dataPrediction, Prediction) switch
            {
                (true, PredictionType.Epsilon) => (x[i] - s * m[i]) / a,
                (true, PredictionType.Sample) => m[i],
                (true, _) => a * x[i] - s * m[i],
                (false, PredictionType.Epsilon) => m[i],
                (false, PredictionType.Sample) => (x[i] - a * m[i]) / s,
                (false, _) => a * m[i] + s * x[i],
            };
        }
        return r;
    }

    protected double[] MultistepTimesteps(int n, int lastTimestep)
    {
        int N = NumTrainTimesteps;
        double[] t = TimestepSpacing switch
        {
            "linspace" => ReferenceArithmetic.NumpyLinspace(0, lastTimestep - 1, n + 1).Select(ReferenceArithmetic.Round).Reverse().Take(n).ToArray(),
            "leading" => Enumerable.Range(0, n + 1).Select(i => (double)((long)i * (lastTimestep / (n + 1)))).Reverse().Take(n).Select(x => x + StepsOffset).ToArray(),
            "trailing" => ReferenceArithmetic.NumpyArange(lastTimestep, 0, -(N / (double)n)).Select(x => ReferenceArithmetic.Round(x) - 1).ToArray(),
            _ => throw Invalid("timestep_spacing", $"'{TimestepSpacing}' is not supported"),
        };
        var training = TrainingSigmas();
        _sigmas = training.Select(s => (double)s).ToArray();
        if (UseKarras)
        {
            var logSigmas = KarrasSigmas.LogSigmas(training);
            _sigmas = KarrasSigmas.Convert(_sigmas, n);
            t = _sigmas.Select(s => ReferenceArithmetic.Round(KarrasSigmas.SigmaToT(s, logSigmas))).Reverse().ToArray();
        }
        return t.Distinct().ToArray(); // Enumerable.Distinct keeps first occurrences in order
    }

    /// <summary>diffusers: the index of t in the schedule, or the last index when t is not in it.</summary>
    protected int StepIndexOrLast(double timestep)
    {
        int i = IndexOfTimestep(timestep);
        return i < 0 ? TimestepValues.Length - 1 : i;
    }

    protected static float ExpM1(float x) => (float)(Math.Exp(x) - 1.0);
    protected static float Exp(float x) => (float)Math.Exp(x);
}
