using CudaDream.Diffusion.Sampling.Engines;
using CudaDream.Diffusion.Schedulers;
using CudaDream.Engine.Randomness;

namespace CudaDream.Diffusion.Sampling;

/// <summary>
/// The denoising loop of diffusers' StableDiffusionPipeline (0.21.4): per timestep, the scaled latents go through
/// the UNet once for the whole batch [negative; prompt] (the unconditional half first), the two halves are
/// combined by classifier-free guidance, ε̂ = ε_u + s·(ε_c − ε_u) (Ho &amp; Salimans 2022, eq. 6 written with
/// s = 1 + w), and the scheduler steps the unscaled latents. All arithmetic in float32, as torch does it.
/// </summary>
public sealed class GuidedDenoiser(IUNetSession unet, bool guided, float guidanceScale)
{
    /// <summary>Runs <paramref name="timesteps"/> on <paramref name="latents"/> [B, C, h, w] (flat, updated in place).</summary>
    /// <param name="afterStep">Called with the number of timesteps done.</param>
    public void Run(IScheduler scheduler, IReadOnlyList<double> timesteps, float[] latents, INoiseSource? noise,
        Action<int>? afterStep, CancellationToken cancellation)
    {
        int n = latents.Length;
        var unetInput = new float[guided ? 2 * n : n];
        var unetOutput = new float[unetInput.Length];
        var prediction = guided ? new float[n] : unetOutput;
        for (int k = 0; k < timesteps.Count; k++)
        {
            cancellation.ThrowIfCancellationRequested();
            double t = timesteps[k];
            scheduler.ScaleModelInput(latents, t, unetInput.AsSpan(0, n));
            if (guided) unetInput.AsSpan(0, n).CopyTo(unetInput.AsSpan(n, n));
            unet.Predict(unetInput, t, unetOutput);
            if (guided) Guide(unetOutput.AsSpan(0, n), unetOutput.AsSpan(n, n), guidanceScale, prediction);
            scheduler.Step(prediction, t, latents, noise);
            afterStep?.Invoke(k + 1);
        }
    }

    /// <summary>ε̂ = ε_u + s·(ε_c − ε_u).</summary>
    public static void Guide(ReadOnlySpan<float> unconditional, ReadOnlySpan<float> conditional, float scale, Span<float> destination)
    {
        for (int i = 0; i < destination.Length; i++)
            destination[i] = unconditional[i] + scale * (conditional[i] - unconditional[i]);
    }
}
