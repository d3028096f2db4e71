using CudaDream.Engine.Randomness;

namespace CudaDream.Diffusion.Schedulers;

/// <summary>
/// A diffusion sampling schedule, stepping like diffusers 0.21.4's scheduler of the same name. Tensors are flat
/// float32 spans of the whole latent batch (any layout: every operation is element-wise). Typical loop, as
/// StableDiffusionPipeline runs it:
/// <code>
/// s.SetTimesteps(steps);
/// x = initialNoise · InitNoiseSigma;
/// foreach (t in s.Timesteps) { s.ScaleModelInput(x, t, xin); eps = unet(xin, t); s.Step(eps, t, x, noise); }
/// </code>
/// Schedulers keep their multistep history; <see cref="SetTimesteps"/> resets it. Not thread-safe.
/// </summary>
public interface IScheduler
{
    /// <summary>The CLI name (ddim, pndm, euler, euler-a, lms, heun, dpmpp-2m-karras, unipc, ddpm).</summary>
    string Name { get; }
    int NumTrainTimesteps { get; }
    /// <summary>diffusers' <c>scheduler.order</c>: model evaluations per inference step (Heun 2, others 1).</summary>
    int Order { get; }
    /// <summary>The step count last given to <see cref="SetTimesteps"/>.</summary>
    int NumInferenceSteps { get; }
    /// <summary>The timesteps to visit, in order (Heun and PNDM repeat some, as diffusers does).</summary>
    IReadOnlyList<double> Timesteps { get; }
    /// <summary>The noise levels σ after <see cref="SetTimesteps"/>, where the scheduler has them (else null).</summary>
    IReadOnlyList<double>? Sigmas { get; }
    /// <summary>The factor for the initial Gaussian noise (1 for DDPM-type schedulers, σ_max for k-diffusion ones).</summary>
    double InitNoiseSigma { get; }

    void SetTimesteps(int numInferenceSteps);

    /// <summary>The UNet input for timestep t (k-diffusion schedulers divide by √(σ²+1)). Destination may be the sample itself.</summary>
    void ScaleModelInput(ReadOnlySpan<float> sample, double timestep, Span<float> destination);

    /// <summary>
    /// Advances <paramref name="sample"/> (the unscaled x_t) in place to the next timestep, given the model output at
    /// <paramref name="timestep"/>. Stochastic schedulers (DDPM, Euler ancestral, DDIM with η &gt; 0) draw one tensor
    /// from <paramref name="noise"/> per call and throw without one.
    /// </summary>
    void Step(ReadOnlySpan<float> modelOutput, double timestep, Span<float> sample, INoiseSource? noise = null);

    /// <summary>Noises a clean sample to timestep t (img2img start): √ᾱ_t·x + √(1−ᾱ_t)·n, or x + σ_t·n for σ-based schedulers.</summary>
    void AddNoise(ReadOnlySpan<float> original, ReadOnlySpan<float> noise, double timestep, Span<float> destination);

    /// <summary>StableDiffusionImg2ImgPipeline.get_timesteps: the tail of <see cref="Timesteps"/> that img2img runs at this strength.</summary>
    Img2ImgTimesteps GetImg2ImgTimesteps(double strength);
}

/// <param name="Timesteps">Timesteps to run; the first is where the init image is noised to.</param>
/// <param name="StartIndex">Index of the first of them in the full schedule (t_start · order).</param>
/// <param name="EffectiveSteps">num_inference_steps − t_start, as diffusers returns it.</param>
public sealed record Img2ImgTimesteps(IReadOnlyList<double> Timesteps, int StartIndex, int EffectiveSteps);

/// <summary>What the model predicts (diffusers' prediction_type).</summary>
public enum PredictionType { Epsilon, VPrediction, Sample }
