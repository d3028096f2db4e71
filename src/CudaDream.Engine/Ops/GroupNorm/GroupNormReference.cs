using System.Numerics;
using CudaDream.Engine.Backends.Cpu.Kernels;

namespace CudaDream.Engine.Ops;

/// <summary>
/// Group normalisation (Wu &amp; He 2018, eq. 1–3) over x [N, C, S] (S = product of the spatial dims):
/// the C/G·S elements of group g of sample n share one mean μ and one biased variance σ²,
/// y = (x − μ)·rstd·γ[c] + β[c] with rstd = 1/√(σ² + eps); optionally y ← SiLU(y) (the fused
/// "GroupNorm + SiLU" of every SD resnet). The forward saves μ and rstd [N, G] for the backward.
/// γ/β empty = 1/0. InstanceNormalization is the case G = C (see <see cref="InstanceNorm{T}"/>).
/// </summary>
public static class GroupNormReference
{
    /// <summary>
    /// Forward. Writes y [N,C,S] and, when non-empty, mean and rstd [N,G] (the saved tensors of the backward).
    /// </summary>
    public static void Forward<T>(int n, int c, int s, int groups, T eps, ReadOnlySpan<T> x, ReadOnlySpan<T> gamma, ReadOnlySpan<T> beta,
        Span<T> y, Span<T> mean, Span<T> rstd, bool fuseSilu = false)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        Check(n, c, s, groups, x.Length, gamma.Length, beta.Length);
        KernelChecks.Exact(y.Length, (long)n * c * s, nameof(y));
        KernelChecks.Optional(mean.Length, (long)n * groups, nameof(mean));
        KernelChecks.Optional(rstd.Length, (long)n * groups, nameof(rstd));
        int cg = c / groups, count = cg * s;
        T countT = T.CreateChecked(count);
        for (int b = 0; b < n; b++)
        for (int g = 0; g < groups; g++)
        {
            var xs = x.Slice((b * c + g * cg) * s, count);
            T mu = T.Zero;
            foreach (T v in xs) mu += v;
            mu /= countT;
            T variance = T.Zero;
            foreach (T v in xs) variance += (v - mu) * (v - mu);
            variance /= countT;
            T r = T.One / T.Sqrt(variance + eps);
            if (!mean.IsEmpty) mean[b * groups + g] = mu;
            if (!rstd.IsEmpty) rstd[b * groups + g] = r;
            for (int ch = g * cg; ch < (g + 1) * cg; ch++)
            for (int i = 0; i < s; i++)
            {
                int idx = (b * c + ch) * s + i;
                T z = Affine(x[idx], mu, r, gamma, beta, ch);
                y[idx] = fuseSilu ? z * Sigmoid(z) : z;
            }
        }
    }

    /// <summary>
    /// Backward from the saved mean/rstd [N,G]. Writes dx [N,C,S] (overwrite). dgamma/dbeta [C] are
    /// written when non-empty (overwrite, or added to when <paramref name="accumulate"/>). With
    /// <paramref name="fuseSilu"/> the pre-activation z = (x−μ)·rstd·γ + β is recomputed from x, mean,
    /// rstd, γ, β and dz = dy·σ(z)·(1 + z·(1 − σ(z))).
    /// </summary>
    public static void Backward<T>(int n, int c, int s, int groups, ReadOnlySpan<T> x, ReadOnlySpan<T> gamma, ReadOnlySpan<T> beta,
        ReadOnlySpan<T> mean, ReadOnlySpan<T> rstd, ReadOnlySpan<T> dy, Span<T> dx, Span<T> dgamma, Span<T> dbeta,
        bool fuseSilu = false, bool accumulate = false)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        Check(n, c, s, groups, x.Length, gamma.Length, beta.Length);
        KernelChecks.Exact(mean.Length, (long)n * groups, nameof(mean));
        KernelChecks.Exact(rstd.Length, (long)n * groups, nameof(rstd));
        KernelChecks.Exact(dy.Length, (long)n * c * s, nameof(dy));
        KernelChecks.Exact(dx.Length, (long)n * c * s, nameof(dx));
        KernelChecks.Optional(dgamma.Length, c, nameof(dgamma));
        KernelChecks.Optional(dbeta.Length, c, nameof(dbeta));
        if (!accumulate) { dgamma.Clear(); dbeta.Clear(); }
        int cg = c / groups, count = cg * s;
        T countT = T.CreateChecked(count);
        for (int b = 0; b < n; b++)
        for (int g = 0; g < groups; g++)
        {
            T mu = mean[b * groups + g], r = rstd[b * groups + g];
            // dx = rstd·(dx̂ − mean(dx̂) − x̂·mean(dx̂·x̂)) with dx̂ = dz·γ, the means over the group.
            T sumDxhat = T.Zero, sumDxhatXhat = T.Zero;
            for (int ch = g * cg; ch < (g + 1) * cg; ch++)
            for (int i = 0; i < s; i++)
            {
                int idx = (b * c + ch) * s + i;
                T xhat = (x[idx] - mu) * r;
                T dz = PreActivationGradient(x[idx], dy[idx], mu, r, gamma, beta, ch, fuseSilu);
                T dxhat = dz * Gamma(gamma, ch);
                sumDxhat += dxhat;
                sumDxhatXhat += dxhat * xhat;
                if (!dgamma.IsEmpty) dgamma[ch] += dz * xhat;
                if (!dbeta.IsEmpty) dbeta[ch] += dz;
            }
            T meanDxhat = sumDxhat / countT, meanDxhatXhat = sumDxhatXhat / countT;
            for (int ch = g * cg; ch < (g + 1) * cg; ch++)
            for (int i = 0; i < s; i++)
            {
                int idx = (b * c + ch) * s + i;
                T xhat = (x[idx] - mu) * r;
                T dxhat = PreActivationGradient(x[idx], dy[idx], mu, r, gamma, beta, ch, fuseSilu) * Gamma(gamma, ch);
                dx[idx] = r * (dxhat - meanDxhat - xhat * meanDxhatXhat);
            }
        }
    }

    /// <summary>
    /// ONNX InstanceNormalization: x [N,C,S] normalised per (n, c) with scale/bias [C] — GroupNorm with G = C.
    /// mean/rstd [N,C] are written when non-empty, so <see cref="Backward{T}"/> with groups = C is its backward.
    /// </summary>
    public static void InstanceNorm<T>(int n, int c, int s, T eps, ReadOnlySpan<T> x, ReadOnlySpan<T> scale, ReadOnlySpan<T> bias,
        Span<T> y, Span<T> mean, Span<T> rstd)
        where T : unmanaged, IFloatingPointIeee754<T> =>
        Forward(n, c, s, c, eps, x, scale, bias, y, mean, rstd);

    internal static void Check(int n, int c, int s, int groups, int xLength, int gammaLength, int betaLength)
    {
        KernelChecks.Positive(n, nameof(n));
        KernelChecks.Positive(c, nameof(c));
        KernelChecks.Positive(s, nameof(s));
        KernelChecks.Positive(groups, nameof(groups));
        if (c % groups != 0) throw new ArgumentException($"{c} channels are not divisible into {groups} groups", nameof(groups));
        KernelChecks.Exact(xLength, (long)n * c * s, "x");
        KernelChecks.Optional(gammaLength, c, "gamma");
        KernelChecks.Optional(betaLength, c, "beta");
    }

    private static T Gamma<T>(ReadOnlySpan<T> gamma, int ch) where T : unmanaged, IFloatingPointIeee754<T> =>
        gamma.IsEmpty ? T.One : gamma[ch];

    private static T Affine<T>(T x, T mu, T r, ReadOnlySpan<T> gamma, ReadOnlySpan<T> beta, int ch)
        where T : unmanaged, IFloatingPointIeee754<T> =>
        (x - mu) * r * Gamma(gamma, ch) + (beta.IsEmpty ? T.Zero : beta[ch]);

    private static T PreActivationGradient<T>(T x, T dy, T mu, T r, ReadOnlySpan<T> gamma, ReadOnlySpan<T> beta, int ch, bool fuseSilu)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        if (!fuseSilu) return dy;
        T z = Affine(x, mu, r, gamma, beta, ch);
        T sig = Sigmoid(z);
        return dy * sig * (T.One + z * (T.One - sig));
    }

    private static T Sigmoid<T>(T z) where T : unmanaged, IFloatingPointIeee754<T> => T.One / (T.One + T.Exp(-z));
}
