using CudaDream.Engine.Randomness;

namespace CudaDream.Diffusion.Schedulers;

/// <summary>
/// Euler's method on the probability-flow ODE dx/dσ = (x − x̂_0)/σ (Karras et al. 2022, Algorithm 2 without the
/// second-order correction and with S_churn = 0, as k-diffusion's sample_euler and diffusers'
/// EulerDiscreteScheduler default): x_{i+1} = x_i + (σ_{i+1} − σ_i)·d_i.
/// Class defaults (diffusers): β 0.0001..0.02 linear, "linspace", interpolation linear, no Karras sigmas.
/// </summary>
public sealed class EulerDiscreteScheduler : SigmaScheduler
{
    private static readonly Defaults ClassDefaults = new(0.0001, 0.02, "linear", "linspace");
    private readonly bool _karras;

    public override string Name => "euler";

    public EulerDiscreteScheduler(SchedulerConfig config) : base(config, ClassDefaults)
    {
        _karras = config.UseKarrasSigmas ?? false;
        if ((config.InterpolationType ?? "linear") != "linear")
            throw Invalid("interpolation_type", $"'{config.InterpolationType}' is not supported (only linear)");
    }

    protected override void SetTimestepsCore(int numInferenceSteps)
    {
        CheckSteps(numInferenceSteps, NumTrainTimesteps);
        NumInferenceSteps = numInferenceSteps;
        var (timesteps, sigmas) = InterpolatedSchedule(numInferenceSteps, _karras);
        TimestepValues = timesteps;
        SigmaValues = sigmas.Select(s => (float)s).Append(0f).ToArray();
    }

    public override void Step(ReadOnlySpan<float> modelOutput, double timestep, Span<float> sample, INoiseSource? noise = null)
    {
        RequireTimesteps();
        CheckSameLength(modelOutput.Length, sample.Length);
        int index = StepIndex(timestep);
        float sigma = SigmaValues[index];
        float sigmaHat = sigma; // γ = 0: no churn
        var (vOut, vDen) = VFactors(sigma);
        float dt = SigmaValues[index + 1] - sigmaHat;
        for (int i = 0; i < sample.Length; i++)
        {
            float x = sample[i];
            float x0 = PredictOriginal(x, modelOutput[i], sigmaHat, vOut, vDen);
            float derivative = (x - x0) / sigmaHat;
            sample[i] = x + derivative * dt;
        }
    }
}
