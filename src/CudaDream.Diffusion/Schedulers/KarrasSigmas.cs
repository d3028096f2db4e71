namespace CudaDream.Diffusion.Schedulers;

/// <summary>
/// The noise-level grid of Karras, Aittala, Aila, Laine 2022 ("Elucidating the Design Space of Diffusion-Based
/// Generative Models", eq. 5): σ_i = (σ_max^{1/ρ} + i/(n−1)·(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ with ρ = 7, and the
/// inverse map from σ back to a fractional training timestep by interpolating log σ (diffusers' _sigma_to_t).
/// </summary>
internal static class KarrasSigmas
{
    public const double Rho = 7.0;

    /// <summary>
    /// diffusers' _convert_to_karras: σ_min = inSigmas[−1], σ_max = inSigmas[0] (so an ascending input gives an
    /// ascending grid, as DPM-Solver and UniPC pass it).
    /// </summary>
    public static double[] Convert(IReadOnlyList<double> inSigmas, int numInferenceSteps)
    {
        double sigmaMin = inSigmas[^1], sigmaMax = inSigmas[0];
        var ramp = ReferenceArithmetic.NumpyLinspace(0, 1, numInferenceSteps);
        double minInvRho = Math.Pow(sigmaMin, 1 / Rho), maxInvRho = Math.Pow(sigmaMax, 1 / Rho);
        return ramp.Select(r => Math.Pow(maxInvRho + r * (minInvRho - maxInvRho), Rho)).ToArray();
    }

    /// <summary>log σ of each training timestep, in float32 as numpy's log of a float32 array.</summary>
    public static float[] LogSigmas(ReadOnlySpan<float> trainingSigmas)
    {
        var r = new float[trainingSigmas.Length];
        for (int i = 0; i < r.Length; i++) r[i] = (float)Math.Log(trainingSigmas[i]);
        return r;
    }

    /// <summary>
    /// diffusers' _sigma_to_t: the last training index whose log σ is ≤ log σ (at most N−2), then linear
    /// interpolation of the index in log σ, clamped to the interval.
    /// </summary>
    public static double SigmaToT(double sigma, float[] logSigmas)
    {
        double logSigma = Math.Log(sigma);
        // low_idx = argmax of the running count of (logSigma − logSigmas ≥ 0): the last index where it is true
        // (index 0 when it never is).
        int count = 0, best = 0, lowIdx = 0;
        for (int i = 0; i < logSigmas.Length; i++)
        {
            if (logSigma - logSigmas[i] >= 0) count++;
            if (count > best) { best = count; lowIdx = i; }
        }
        lowIdx = Math.Min(lowIdx, logSigmas.Length - 2);
        int highIdx = lowIdx + 1;
        float low = logSigmas[lowIdx], high = logSigmas[highIdx];
        float lowMinusHigh = low - high; // float32 − float32 stays float32 in numpy
        double w = (low - logSigma) / lowMinusHigh;
        w = Math.Clamp(w, 0, 1);
        return (1 - w) * lowIdx + w * highIdx;
    }
}
