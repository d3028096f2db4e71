using System.Buffers;
using System.Numerics.Tensors;
using CudaDream.Engine.Backends.Cpu.Kernels;

namespace CudaDream.Engine.Ops;

/// <summary>
/// fp32 group normalisation with the contract of <see cref="GroupNormReference"/> (same arguments,
/// same saved mean/rstd [N,G], same fused-SiLU backward), vectorised per channel row and parallel
/// over (sample, group). dγ/dβ are first summed per (sample, channel) — each task owns its group's
/// channels, so no two tasks write the same entry — and then over the samples.
/// </summary>
public static class GroupNormFast
{
    public static void Forward(int n, int c, int s, int groups, float eps, ReadOnlySpan<float> x, ReadOnlySpan<float> gamma, ReadOnlySpan<float> beta,
        Span<float> y, Span<float> mean, Span<float> rstd, bool fuseSilu = false)
    {
        GroupNormReference.Check(n, c, s, groups, x.Length, gamma.Length, beta.Length);
        KernelChecks.Exact(y.Length, (long)n * c * s, nameof(y));
        KernelChecks.Optional(mean.Length, (long)n * groups, nameof(mean));
        KernelChecks.Optional(rstd.Length, (long)n * groups, nameof(rstd));
        unsafe
        {
            fixed (float* px = x, pg = gamma, pb = beta, py = y, pm = mean, pr = rstd)
            {
                var a = new Args((nint)px, (nint)pg, (nint)pb, (nint)pm, (nint)pr, n, c, s, groups, !gamma.IsEmpty, !beta.IsEmpty, !mean.IsEmpty);
                nint yBase = (nint)py;
                VectorMath.ForRanges(n * groups, Parts(n * groups, (long)c * s), (start, end) =>
                {
                    for (int item = start; item < end; item++) ForwardGroup(a, item, eps, (float*)yBase, fuseSilu);
                });
            }
        }
    }

    public static void Backward(int n, int c, int s, int groups, ReadOnlySpan<float> x, ReadOnlySpan<float> gamma, ReadOnlySpan<float> beta,
        ReadOnlySpan<float> mean, ReadOnlySpan<float> rstd, ReadOnlySpan<float> dy, Span<float> dx, Span<float> dgamma, Span<float> dbeta,
        bool fuseSilu = false, bool accumulate = false)
    {
        GroupNormReference.Check(n, c, s, groups, x.Length, gamma.Length, beta.Length);
        KernelChecks.Exact(mean.Length, (long)n * groups, nameof(mean));
        KernelChecks.Exact(rstd.Length, (long)n * groups, nameof(rstd));
        KernelChecks.Exact(dy.Length, (long)n * c * s, nameof(dy));
        KernelChecks.Exact(dx.Length, (long)n * c * s, nameof(dx));
        KernelChecks.Optional(dgamma.Length, c, nameof(dgamma));
        KernelChecks.Optional(dbeta.Length, c, nameof(dbeta));
        // Per (sample, channel): Σ dz·x̂ and Σ dz, reduced over samples at the end.
        float[] partial = ArrayPool<float>.Shared.Rent(2 * n * c);
        try
        {
            unsafe
            {
                fixed (float* px = x, pg = gamma, pb = beta, pm = mean, pr = rstd, pdy = dy, pdx = dx, pp = partial)
                {
                    var a = new Args((nint)px, (nint)pg, (nint)pb, (nint)pm, (nint)pr, n, c, s, groups, !gamma.IsEmpty, !beta.IsEmpty, true);
                    nint dyBase = (nint)pdy, dxBase = (nint)pdx, partialBase = (nint)pp;
                    VectorMath.ForRanges(n * groups, Parts(n * groups, (long)c * s), (start, end) =>
                    {
                        for (int item = start; item < end; item++)
                            BackwardGroup(a, item, (float*)dyBase, (float*)dxBase, (float*)partialBase, fuseSilu);
                    });
                }
            }
            if (!accumulate) { dgamma.Clear(); dbeta.Clear(); }
            for (int b = 0; b < n; b++)
            {
                if (!dgamma.IsEmpty) TensorPrimitives.Add(dgamma, partial.AsSpan(2 * b * c, c), dgamma);
                if (!dbeta.IsEmpty) TensorPrimitives.Add(dbeta, partial.AsSpan(2 * b * c + c, c), dbeta);
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(partial);
        }
    }

    /// <summary>InstanceNormalization = GroupNorm with one channel per group.</summary>
    public static void InstanceNorm(int n, int c, int s, float eps, ReadOnlySpan<float> x, ReadOnlySpan<float> scale, ReadOnlySpan<float> bias,
        Span<float> y, Span<float> mean, Span<float> rstd) =>
        Forward(n, c, s, c, eps, x, scale, bias, y, mean, rstd);

    private static int Parts(int items, long elements) =>
        elements < 1 << 15 ? 1 : Math.Min(items, CpuKernelOptions.MaxDegreeOfParallelism);

    /// <summary>Pointers to the tensors shared by every (sample, group) task (spans cannot cross into lambdas).</summary>
    private readonly record struct Args(nint X, nint Gamma, nint Beta, nint Mean, nint Rstd, int N, int C, int S, int Groups,
        bool HasGamma, bool HasBeta, bool SaveStats);

    private static unsafe void ForwardGroup(in Args a, int item, float eps, float* y, bool fuseSilu)
    {
        int b = item / a.Groups, g = item % a.Groups, cg = a.C / a.Groups, count = cg * a.S;
        long offset = ((long)b * a.C + g * cg) * a.S;
        var xs = new ReadOnlySpan<float>((float*)a.X + offset, count);
        float mu = TensorPrimitives.Sum(xs) / count;
        float r = 1f / MathF.Sqrt(VectorMath.SumSquaredDeviations(xs, mu) / count + eps);
        if (a.SaveStats) { ((float*)a.Mean)[item] = mu; ((float*)a.Rstd)[item] = r; }
        float[]? scratch = fuseSilu ? ArrayPool<float>.Shared.Rent(a.S) : null;
        try
        {
            for (int k = 0; k < cg; k++)
            {
                int ch = g * cg + k;
                float scale = r * (a.HasGamma ? ((float*)a.Gamma)[ch] : 1f);
                float shift = (a.HasBeta ? ((float*)a.Beta)[ch] : 0f) - mu * scale;
                var row = new Span<float>(y + offset + (long)k * a.S, a.S);
                VectorMath.Affine(xs.Slice(k * a.S, a.S), scale, shift, row);
                if (scratch != null) VectorMath.SiluInPlace(row, scratch.AsSpan(0, a.S));
            }
        }
        finally
        {
            if (scratch != null) ArrayPool<float>.Shared.Return(scratch);
        }
    }

    private static unsafe void BackwardGroup(in Args a, int item, float* dy, float* dx, float* partial, bool fuseSilu)
    {
        int b = item / a.Groups, g = item % a.Groups, cg = a.C / a.Groups, count = cg * a.S;
        long offset = ((long)b * a.C + g * cg) * a.S;
        float mu = ((float*)a.Mean)[item], r = ((float*)a.Rstd)[item];
        // dz (gradient at the normalised-and-affine output, before SiLU) for the whole group: needed twice.
        float[] dzArray = ArrayPool<float>.Shared.Rent(count + (fuseSilu ? 2 * a.S : 0));
        try
        {
            var dzAll = dzArray.AsSpan(0, count);
            float sumDxhat = 0f, sumDxhatXhat = 0f;
            for (int k = 0; k < cg; k++)
            {
                int ch = g * cg + k;
                float gamma = a.HasGamma ? ((float*)a.Gamma)[ch] : 1f;
                var xr = new ReadOnlySpan<float>((float*)a.X + offset + (long)k * a.S, a.S);
                var dyr = new ReadOnlySpan<float>(dy + offset + (long)k * a.S, a.S);
                var dz = dzAll.Slice(k * a.S, a.S);
                if (fuseSilu)
                {
                    var z = dzArray.AsSpan(count, a.S);
                    float scale = r * gamma, shift = (a.HasBeta ? ((float*)a.Beta)[ch] : 0f) - mu * scale;
                    VectorMath.Affine(xr, scale, shift, z);
                    VectorMath.SiluBackward(z, dyr, dz, dzArray.AsSpan(count + a.S, a.S));
                }
                else dyr.CopyTo(dz);
                float sumDz = TensorPrimitives.Sum(dz);
                float sumDzXhat = VectorMath.DotCentered(dz, xr, mu) * r;
                partial[2 * b * a.C + ch] = sumDzXhat;
                partial[2 * b * a.C + a.C + ch] = sumDz;
                sumDxhat += gamma * sumDz;
                sumDxhatXhat += gamma * sumDzXhat;
            }
            float meanDxhat = sumDxhat / count, meanDxhatXhat = sumDxhatXhat / count;
            for (int k = 0; k < cg; k++)
            {
                int ch = g * cg + k;
                float gamma = a.HasGamma ? ((float*)a.Gamma)[ch] : 1f;
                VectorMath.NormInputGradient(new ReadOnlySpan<float>((float*)a.X + offset + (long)k * a.S, a.S), dzAll.Slice(k * a.S, a.S),
                    gamma, mu, r, meanDxhat, meanDxhatXhat, new Span<float>(dx + offset + (long)k * a.S, a.S));
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(dzArray);
        }
    }
}
