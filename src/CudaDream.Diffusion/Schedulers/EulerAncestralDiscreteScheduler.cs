using CudaDream.Engine.Randomness;

namespace CudaDream.Diffusion.Schedulers;

/// <summary>
/// Euler ancestral sampling (k-diffusion's sample_euler_ancestral, after Karras et al. 2022 and Song et al.
/// 2021's ancestral step): an Euler step down to σ_down followed by fresh noise of σ_up, where
/// σ_up = √(σ_to²(σ_from² − σ_to²)/σ_from²) and σ_down = √(σ_to² − σ_up²). One noise draw per step.
/// Class defaults (diffusers): β 0.0001..0.02 linear, "linspace".
/// </summary>
public sealed class EulerAncestralDiscreteScheduler : SigmaScheduler
{
    private static readonly Defaults ClassDefaults = new(0.0001, 0.02, "linear", "linspace");

    public override string Name => "euler-a";

    public EulerAncestralDiscreteScheduler(SchedulerConfig config) : base(config, ClassDefaults)
    {
        if (Prediction == PredictionType.Sample) throw Invalid("prediction_type", "'sample' is not implemented for Euler ancestral (as in diffusers)");
    }

    protected override void SetTimestepsCore(int numInferenceSteps)
    {
        CheckSteps(numInferenceSteps, NumTrainTimesteps);
        NumInferenceSteps = numInferenceSteps;
        var (timesteps, sigmas) = InterpolatedSchedule(numInferenceSteps, karras: false);
        TimestepValues = timesteps;
        SigmaValues = sigmas.Select(s => (float)s).Append(0f).ToArray();
    }

    public override void Step(ReadOnlySpan<float> modelOutput, double timestep, Span<float> sample, INoiseSource? noise = null)
    {
        RequireTimesteps();
        CheckSameLength(modelOutput.Length, sample.Length);
        if (noise is null) throw new InvalidOperationException("Euler ancestral adds noise every step: pass a noise source");
        int index = StepIndex(timestep);
        float sigma = SigmaValues[index];
        var (vOut, vDen) = VFactors(sigma);
        float sigmaFrom = sigma, sigmaTo = SigmaValues[index + 1];
        float sigmaUp = MathF.Sqrt(sigmaTo * sigmaTo * (sigmaFrom * sigmaFrom - sigmaTo * sigmaTo) / (sigmaFrom * sigmaFrom));
        float sigmaDown = MathF.Sqrt(sigmaTo * sigmaTo - sigmaUp * sigmaUp);
        float dt = sigmaDown - sigma;

        var z = new float[sample.Length];
        noise.Fill(z);
        for (int i = 0; i < sample.Length; i++)
        {
            float x = sample[i];
            float x0 = PredictOriginal(x, modelOutput[i], sigma, vOut, vDen);
            float derivative = (x - x0) / sigma;
            float prev = x + derivative * dt;
            sample[i] = prev + z[i] * sigmaUp;
        }
    }
}
