using System.Buffers;
using System.Numerics.Tensors;
using CudaDream.Engine.Backends.Cpu.Kernels;

namespace CudaDream.Engine.Ops;

/// <summary>
/// fp32 layer normalisation with the contract of <see cref="LayerNormReference"/>, vectorised per row and
/// parallel over row ranges; in the backward each range sums its own dγ/dβ, added together at the end.
/// </summary>
public static class LayerNormFast
{
    public static void Forward(int rows, int dim, float eps, ReadOnlySpan<float> x, ReadOnlySpan<float> gamma, ReadOnlySpan<float> beta,
        Span<float> y, Span<float> mean, Span<float> rstd)
    {
        LayerNormReference.Check(rows, dim, x.Length, gamma.Length, beta.Length);
        KernelChecks.Exact(y.Length, (long)rows * dim, nameof(y));
        KernelChecks.Optional(mean.Length, rows, nameof(mean));
        KernelChecks.Optional(rstd.Length, rows, nameof(rstd));
        unsafe
        {
            fixed (float* px = x, pg = gamma, pb = beta, py = y, pm = mean, pr = rstd)
            {
                nint xBase = (nint)px, gBase = (nint)pg, bBase = (nint)pb, yBase = (nint)py, mBase = (nint)pm, rBase = (nint)pr;
                bool hasGamma = !gamma.IsEmpty, hasBeta = !beta.IsEmpty, save = !mean.IsEmpty;
                VectorMath.ForRanges(rows, Parts(rows, dim), (start, end) =>
                {
                    var g = hasGamma ? new ReadOnlySpan<float>((float*)gBase, dim) : default;
                    var b = hasBeta ? new ReadOnlySpan<float>((float*)bBase, dim) : default;
                    for (int r = start; r < end; r++)
                    {
                        var xr = new ReadOnlySpan<float>((float*)xBase + (long)r * dim, dim);
                        var yr = new Span<float>((float*)yBase + (long)r * dim, dim);
                        float mu = TensorPrimitives.Sum(xr) / dim;
                        float rs = 1f / MathF.Sqrt(VectorMath.SumSquaredDeviations(xr, mu) / dim + eps);
                        if (save) { ((float*)mBase)[r] = mu; ((float*)rBase)[r] = rs; }
                        VectorMath.Affine(xr, rs, -mu * rs, yr);
                        if (hasGamma) TensorPrimitives.Multiply(yr, g, yr);
                        if (hasBeta) TensorPrimitives.Add(yr, b, yr);
                    }
                });
            }
        }
    }

    public static void Backward(int rows, int dim, ReadOnlySpan<float> x, ReadOnlySpan<float> gamma, ReadOnlySpan<float> mean, ReadOnlySpan<float> rstd,
        ReadOnlySpan<float> dy, Span<float> dx, Span<float> dgamma, Span<float> dbeta, bool accumulate = false)
    {
        LayerNormReference.Check(rows, dim, x.Length, gamma.Length, 0);
        KernelChecks.Exact(mean.Length, rows, nameof(mean));
        KernelChecks.Exact(rstd.Length, rows, nameof(rstd));
        KernelChecks.Exact(dy.Length, (long)rows * dim, nameof(dy));
        KernelChecks.Exact(dx.Length, (long)rows * dim, nameof(dx));
        KernelChecks.Optional(dgamma.Length, dim, nameof(dgamma));
        KernelChecks.Optional(dbeta.Length, dim, nameof(dbeta));
        if (!accumulate) { dgamma.Clear(); dbeta.Clear(); }
        if (rows == 0) return;
        int parts = Parts(rows, dim);
        int per = (rows + parts - 1) / parts;
        parts = (rows + per - 1) / per;
        // Per part: dγ partial [dim], dβ partial [dim], and two row-sized scratch rows.
        int stride = 4 * dim;
        float[] scratch = ArrayPool<float>.Shared.Rent(parts * stride);
        try
        {
            unsafe
            {
                fixed (float* px = x, pg = gamma, pm = mean, pr = rstd, pdy = dy, pdx = dx, ps = scratch)
                {
                    nint xBase = (nint)px, gBase = (nint)pg, mBase = (nint)pm, rBase = (nint)pr, dyBase = (nint)pdy, dxBase = (nint)pdx, sBase = (nint)ps;
                    bool hasGamma = !gamma.IsEmpty;
                    VectorMath.ForRanges(parts, parts, (firstPart, lastPart) =>
                    {
                        for (int part = firstPart; part < lastPart; part++)
                        {
                            var own = new Span<float>((float*)sBase + (long)part * stride, stride);
                            var dgPart = own.Slice(0, dim);
                            var dbPart = own.Slice(dim, dim);
                            var xhat = own.Slice(2 * dim, dim);
                            var dxhat = own.Slice(3 * dim, dim);
                            dgPart.Clear();
                            dbPart.Clear();
                            var g = hasGamma ? new ReadOnlySpan<float>((float*)gBase, dim) : default;
                            for (int r = part * per; r < Math.Min(rows, (part + 1) * per); r++)
                            {
                                var xr = new ReadOnlySpan<float>((float*)xBase + (long)r * dim, dim);
                                var dyr = new ReadOnlySpan<float>((float*)dyBase + (long)r * dim, dim);
                                float mu = ((float*)mBase)[r], rs = ((float*)rBase)[r];
                                VectorMath.Affine(xr, rs, -mu * rs, xhat);
                                if (hasGamma) TensorPrimitives.Multiply(dyr, g, dxhat); else dyr.CopyTo(dxhat);
                                TensorPrimitives.MultiplyAdd(dyr, xhat, dgPart, dgPart);
                                TensorPrimitives.Add(dbPart, dyr, dbPart);
                                float meanDxhat = TensorPrimitives.Sum(dxhat) / dim;
                                float meanDxhatXhat = TensorPrimitives.Dot(dxhat, xhat) / dim;
                                // dx = rstd·(dx̂ − mean(dx̂) − x̂·mean(dx̂·x̂))
                                var dxr = new Span<float>((float*)dxBase + (long)r * dim, dim);
                                TensorPrimitives.MultiplyAdd(xhat, -meanDxhatXhat, dxhat, dxr);
                                VectorMath.Affine(dxr, rs, -meanDxhat * rs, dxr);
                            }
                        }
                    });
                }
            }
            for (int part = 0; part < parts; part++)
            {
                if (!dgamma.IsEmpty) TensorPrimitives.Add(dgamma, scratch.AsSpan(part * stride, dim), dgamma);
                if (!dbeta.IsEmpty) TensorPrimitives.Add(dbeta, scratch.AsSpan(part * stride + dim, dim), dbeta);
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(scratch);
        }
    }

    private static int Parts(int rows, int dim) =>
        (long)rows * dim < 1 << 15 ? 1 : Math.Min(rows, CpuKernelOptions.MaxDegreeOfParallelism);
}
