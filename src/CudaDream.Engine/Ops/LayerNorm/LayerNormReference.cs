using System.Numerics;
using CudaDream.Engine.Backends.Cpu.Kernels;

namespace CudaDream.Engine.Ops;

/// <summary>
/// Layer normalisation (Ba et al. 2016) over the last dimension of x [R, D]:
/// y = (x − μ)·rstd·γ + β with μ, biased σ² per row and rstd = 1/√(σ² + eps).
/// γ/β empty = 1/0. The forward saves mean and rstd [R].
/// </summary>
public static class LayerNormReference
{
    public static void Forward<T>(int rows, int dim, T eps, ReadOnlySpan<T> x, ReadOnlySpan<T> gamma, ReadOnlySpan<T> beta,
        Span<T> y, Span<T> mean, Span<T> rstd)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        Check(rows, dim, x.Length, gamma.Length, beta.Length);
        KernelChecks.Exact(y.Length, (long)rows * dim, nameof(y));
        KernelChecks.Optional(mean.Length, rows, nameof(mean));
        KernelChecks.Optional(rstd.Length, rows, nameof(rstd));
        T dimT = T.CreateChecked(dim);
        for (int r = 0; r < rows; r++)
        {
            var xr = x.Slice(r * dim, dim);
            T mu = T.Zero;
            foreach (T v in xr) mu += v;
            mu /= dimT;
            T variance = T.Zero;
            foreach (T v in xr) variance += (v - mu) * (v - mu);
            variance /= dimT;
            T rs = T.One / T.Sqrt(variance + eps);
            if (!mean.IsEmpty) mean[r] = mu;
            if (!rstd.IsEmpty) rstd[r] = rs;
            for (int i = 0; i < dim; i++)
                y[r * dim + i] = (xr[i] - mu) * rs * (gamma.IsEmpty ? T.One : gamma[i]) + (beta.IsEmpty ? T.Zero : beta[i]);
        }
    }

    /// <summary>
    /// Backward from the saved mean/rstd [R]: dx (overwrite); dgamma/dbeta [D] when non-empty
    /// (overwrite, or added to when <paramref name="accumulate"/>).
    /// </summary>
    public static void Backward<T>(int rows, int dim, ReadOnlySpan<T> x, ReadOnlySpan<T> gamma, ReadOnlySpan<T> mean, ReadOnlySpan<T> rstd,
        ReadOnlySpan<T> dy, Span<T> dx, Span<T> dgamma, Span<T> dbeta, bool accumulate = false)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        Check(rows, dim, x.Length, gamma.Length, 0);
        KernelChecks.Exact(mean.Length, rows, nameof(mean));
        KernelChecks.Exact(rstd.Length, rows, nameof(rstd));
        KernelChecks.Exact(dy.Length, (long)rows * dim, nameof(dy));
        KernelChecks.Exact(dx.Length, (long)rows * dim, nameof(dx));
        KernelChecks.Optional(dgamma.Length, dim, nameof(dgamma));
        KernelChecks.Optional(dbeta.Length, dim, nameof(dbeta));
        if (!accumulate) { dgamma.Clear(); dbeta.Clear(); }
        T dimT = T.CreateChecked(dim);
        for (int r = 0; r < rows; r++)
        {
            T mu = mean[r], rs = rstd[r];
            // dx = rstd·(dx̂ − mean(dx̂) − x̂·mean(dx̂·x̂)), dx̂ = dy·γ.
            T sumDxhat = T.Zero, sumDxhatXhat = T.Zero;
            for (int i = 0; i < dim; i++)
            {
                int idx = r * dim + i;
                T xhat = (x[idx] - mu) * rs;
                T dxhat = dy[idx] * (gamma.IsEmpty ? T.One : gamma[i]);
                sumDxhat += dxhat;
                sumDxhatXhat += dxhat * xhat;
                if (!dgamma.IsEmpty) dgamma[i] += dy[idx] * xhat;
                if (!dbeta.IsEmpty) dbeta[i] += dy[idx];
            }
            T meanDxhat = sumDxhat / dimT, meanDxhatXhat = sumDxhatXhat / dimT;
            for (int i = 0; i < dim; i++)
            {
                int idx = r * dim + i;
                T xhat = (x[idx] - mu) * rs;
                T dxhat = dy[idx] * (gamma.IsEmpty ? T.One : gamma[i]);
                dx[idx] = rs * (dxhat - meanDxhat - xhat * meanDxhatXhat);
            }
        }
    }

    internal static void Check(int rows, int dim, int xLength, int gammaLength, int betaLength)
    {
        KernelChecks.NonNegative(rows, nameof(rows));
        KernelChecks.Positive(dim, nameof(dim));
        KernelChecks.Exact(xLength, (long)rows * dim, "x");
        KernelChecks.Optional(gammaLength, dim, "gamma");
        KernelChecks.Optional(betaLength, dim, "beta");
    }
}
