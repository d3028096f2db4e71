using CudaDream.Diffusion.Schedulers;
using CudaDream.Engine.Randomness;

namespace CudaDream.Diffusion.Training;

/// <summary>What one batch of examples trains on: the noisy latents, the regression target and the loss weights.</summary>
public sealed record ObjectiveDraw(float[] Noisy, float[] Target, int[] Timesteps, float[] Weights);

/// <summary>
/// The DreamBooth training objective in one place — the forward (noising) process, the target the UNet regresses, and
/// the weight of each example in the loss. Every random draw is keyed by (seed, step, purpose, element), so a batch is
/// a pure function of its step.
/// <list type="bullet">
/// <item>Timesteps t ~ U{0, …, T−1} and noise ε ~ N(0, I) (Ho et al. 2020, Algorithm 1). With offset noise
/// (Guttenberg 2023, "Diffusion with offset noise") ε ← ε + o·ξ with one ξ ~ N(0, 1) per (example, channel), so the
/// model also learns to shift an image's mean brightness.</item>
/// <item>The noisy latents x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε, q(x_t | x_0) of Ho et al. 2020, eq. 4.</item>
/// <item>The target: ε (Ho et al. 2020, eq. 14), or v = √ᾱ_t·ε − √(1−ᾱ_t)·x_0 for v-prediction (Salimans &amp; Ho 2022,
/// §4 and Appendix D).</item>
/// <item>The weights w_b of the engine's loss (1/R)·Σ_b w_b·mean((ε̂_b − target_b)²) over R rows. DreamBooth with prior
/// preservation (Ruiz et al. 2023, eq. 2) trains E‖ε̂(x_t) − ε‖² + λ·E‖ε̂(x'_t) − ε'‖² over the instance examples x and
/// the class examples x'; a batch holds B of each (R = 2B), so w = 2 for instance rows and 2λ for class rows make the
/// weighted mean exactly mean(instance) + λ·mean(class). Without prior preservation w = 1. Min-SNR-γ (Hang et al.
/// 2023, eq. 10) multiplies by min(SNR_t, γ)/SNR_t for ε-prediction (min(SNR_t, γ)/(SNR_t + 1) for v), SNR_t =
/// ᾱ_t/(1−ᾱ_t), which keeps the many low-noise timesteps from dominating. Evaluation batches use w = 1.</item>
/// </list>
/// </summary>
public sealed class DiffusionObjective
{
    private readonly DdpmScheduler _schedule;
    private readonly double _noiseOffset, _minSnrGamma, _priorLossWeight;

    public DiffusionObjective(SchedulerConfig scheduler, double noiseOffset, double minSnrGamma, double priorLossWeight)
    {
        _schedule = new DdpmScheduler(scheduler);
        _noiseOffset = noiseOffset;
        _minSnrGamma = minSnrGamma;
        _priorLossWeight = priorLossWeight;
    }

    public PredictionType Prediction => _schedule.Prediction;

    /// <summary>
    /// The draw of <paramref name="rows"/> examples x_0 (<paramref name="latents"/>, [rows, channels, pixels]) at
    /// <paramref name="step"/>. <paramref name="isClass"/> marks prior-preservation rows (null: a batch without them);
    /// <paramref name="timeBase"/> offsets the timestep draws' elements (the evaluation stream keeps them apart from its noise).
    /// </summary>
    public ObjectiveDraw Draw(float[] latents, int rows, int channels, int pixels, ulong seed, long step, RandomPurpose noisePurpose,
        RandomPurpose timePurpose, long timeBase, bool[]? isClass, bool evaluation, int[]? fixedTimesteps = null)
    {
        int per = channels * pixels;
        var noise = new float[rows * per];
        CounterRng.FillNormal(noise, seed, step, noisePurpose);
        if (_noiseOffset > 0)
        {
            var offsets = new float[rows * channels];
            CounterRng.FillNormal(offsets, seed, step, noisePurpose, (long)rows * per);
            for (int r = 0; r < rows; r++)
                for (int c = 0; c < channels; c++)
                    for (int i = 0; i < pixels; i++) noise[(r * channels + c) * pixels + i] += (float)_noiseOffset * offsets[r * channels + c];
        }
        var timesteps = new int[rows];
        for (int r = 0; r < rows; r++)
            timesteps[r] = fixedTimesteps?[r] ?? CounterRng.UniformInt(seed, step, timePurpose, timeBase + r, _schedule.NumTrainTimesteps);

        var noisy = new float[rows * per];
        var target = new float[rows * per];
        for (int r = 0; r < rows; r++)
        {
            var t = timesteps.AsSpan(r, 1);
            var x0 = latents.AsSpan(r * per, per);
            var eps = noise.AsSpan(r * per, per);
            _schedule.AddNoise(x0, eps, t, noisy.AsSpan(r * per, per));
            _schedule.TrainingTarget(x0, eps, t, target.AsSpan(r * per, per));
        }

        var weights = new float[rows];
        for (int r = 0; r < rows; r++) weights[r] = (float)Weight(isClass?[r], timesteps[r], evaluation);
        return new ObjectiveDraw(noisy, target, timesteps, weights);
    }

    public int NumTrainTimesteps => _schedule.NumTrainTimesteps;

    /// <summary>
    /// The validation loss's fixed timesteps: 10, 350, 500, 650 and 990 of a 1000-step schedule (scaled to others), so the
    /// loss is measured over the whole range of noise levels the same way at every evaluation.
    /// </summary>
    public int[] ValidationTimesteps() =>
        new[] { 10, 350, 500, 650, 990 }.Select(t => Math.Min(_schedule.NumTrainTimesteps - 1, (int)((long)t * _schedule.NumTrainTimesteps / 1000))).ToArray();

    /// <summary>
    /// Masked loss (as kohya's masked_loss, but averaged over the masked pixels only): with m ∈ [0, 1] per latent pixel of
    /// row b, the row's loss is l_b = Σ_{c,i} m_i·(ε̂ − target)² / (C·Σ_i m_i). The engine's loss is (1/E)·Σ_e w_b·(ε̂' − t')²
    /// with ε̂' = ε̂·√m and t' = target·√m (a Mul before the loss, so d loss/d ε̂ = 0 exactly where m = 0), which equals
    /// w_b·l_b when w_b is multiplied by the returned factor H·W/Σ_i m_i (0 for an empty mask: the row does not count).
    /// Returns √m per element [rows, C, pixels] and the factor per row.
    /// </summary>
    public static (float[] ElementMask, float[] WeightFactor) MaskedLoss(float[] pixelMasks, int rows, int channels, int pixels)
    {
        var element = new float[rows * channels * pixels];
        var factor = new float[rows];
        for (int r = 0; r < rows; r++)
        {
            double sum = 0;
            for (int i = 0; i < pixels; i++) sum += pixelMasks[r * pixels + i];
            factor[r] = sum > 0 ? (float)(pixels / sum) : 0f;
            for (int c = 0; c < channels; c++)
                for (int i = 0; i < pixels; i++) element[(r * channels + c) * pixels + i] = MathF.Sqrt(pixelMasks[r * pixels + i]);
        }
        return (element, factor);
    }

    /// <summary>w of one row (see the class comment): the prior-preservation factor times the Min-SNR-γ factor.</summary>
    public double Weight(bool? isClass, int timestep, bool evaluation)
    {
        if (evaluation) return 1;
        double w = isClass is bool c ? (c ? 2 * _priorLossWeight : 2) : 1;
        if (_minSnrGamma > 0)
        {
            double ab = _schedule.AlphasCumprod[timestep];
            double snr = ab / (1 - ab);
            w *= Math.Min(snr, _minSnrGamma) / (Prediction == PredictionType.VPrediction ? snr + 1 : snr);
        }
        return w;
    }
}
