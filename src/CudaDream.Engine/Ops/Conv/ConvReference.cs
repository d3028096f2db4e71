using System.Numerics;
using CudaDream.Engine.Backends.Cpu.Kernels;

namespace CudaDream.Engine.Ops;

/// <summary>
/// 2-D convolution (NCHW, grouped, strided, dilated, per-side zero padding) as direct loops.
/// y[n,o,oh,ow] = bias[o] + Σ_{c,i,j} w[o,c,i,j] · x[n, g·Cin/G + c, oh·sh − pt + i·dh, ow·sw − pl + j·dw]
/// (out-of-range x reads are 0), g = o / (Cout/G). The backward kernels walk the same index set and
/// scatter instead of gather, so they are the exact transposes of the forward.
/// </summary>
public static class ConvReference
{
    /// <summary>y = conv(x, w) + bias. <paramref name="bias"/> empty = no bias. Overwrites y.</summary>
    public static void Conv2dForward<T>(in Conv2dGeometry g, ReadOnlySpan<T> x, ReadOnlySpan<T> w, ReadOnlySpan<T> bias, Span<T> y)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        Check(g, x.Length, w.Length, y.Length);
        KernelChecks.Optional(bias.Length, g.OutChannels, nameof(bias));
        int ho = g.OutHeight, wo = g.OutWidth, cinG = g.InChannelsPerGroup, coutG = g.OutChannelsPerGroup;
        for (int n = 0; n < g.Batch; n++)
        for (int o = 0; o < g.OutChannels; o++)
        {
            int group = o / coutG;
            for (int oh = 0; oh < ho; oh++)
            for (int ow = 0; ow < wo; ow++)
            {
                T sum = bias.IsEmpty ? T.Zero : bias[o];
                for (int c = 0; c < cinG; c++)
                for (int i = 0; i < g.KernelH; i++)
                for (int j = 0; j < g.KernelW; j++)
                {
                    if (TryInput(g, n, group * cinG + c, oh, ow, i, j, out int xi))
                        sum += w[WeightIndex(g, o, c, i, j)] * x[xi];
                }
                y[OutputIndex(g, n, o, oh, ow)] = sum;
            }
        }
    }

    /// <summary>dx = convᵀ(dy, w), the gradient of the forward with respect to x. Overwrites dx.</summary>
    public static void Conv2dBackwardData<T>(in Conv2dGeometry g, ReadOnlySpan<T> dy, ReadOnlySpan<T> w, Span<T> dx)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        Check(g, dx.Length, w.Length, dy.Length);
        dx.Clear();
        int ho = g.OutHeight, wo = g.OutWidth, cinG = g.InChannelsPerGroup, coutG = g.OutChannelsPerGroup;
        for (int n = 0; n < g.Batch; n++)
        for (int o = 0; o < g.OutChannels; o++)
        {
            int group = o / coutG;
            for (int oh = 0; oh < ho; oh++)
            for (int ow = 0; ow < wo; ow++)
            {
                T grad = dy[OutputIndex(g, n, o, oh, ow)];
                for (int c = 0; c < cinG; c++)
                for (int i = 0; i < g.KernelH; i++)
                for (int j = 0; j < g.KernelW; j++)
                {
                    if (TryInput(g, n, group * cinG + c, oh, ow, i, j, out int xi))
                        dx[xi] += w[WeightIndex(g, o, c, i, j)] * grad;
                }
            }
        }
    }

    /// <summary>
    /// dw = Σ_n dy ⋆ x, the gradient with respect to the weight. <paramref name="accumulate"/> = false
    /// overwrites dw; true adds to what dw holds (gradient accumulation over micro-batches).
    /// </summary>
    public static void Conv2dBackwardWeight<T>(in Conv2dGeometry g, ReadOnlySpan<T> x, ReadOnlySpan<T> dy, Span<T> dw, bool accumulate = false)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        Check(g, x.Length, dw.Length, dy.Length);
        if (!accumulate) dw.Clear();
        int ho = g.OutHeight, wo = g.OutWidth, cinG = g.InChannelsPerGroup, coutG = g.OutChannelsPerGroup;
        for (int n = 0; n < g.Batch; n++)
        for (int o = 0; o < g.OutChannels; o++)
        {
            int group = o / coutG;
            for (int oh = 0; oh < ho; oh++)
            for (int ow = 0; ow < wo; ow++)
            {
                T grad = dy[OutputIndex(g, n, o, oh, ow)];
                for (int c = 0; c < cinG; c++)
                for (int i = 0; i < g.KernelH; i++)
                for (int j = 0; j < g.KernelW; j++)
                {
                    if (TryInput(g, n, group * cinG + c, oh, ow, i, j, out int xi))
                        dw[WeightIndex(g, o, c, i, j)] += x[xi] * grad;
                }
            }
        }
    }

    /// <summary>dbias[o] = Σ_{n,oh,ow} dy[n,o,oh,ow]. Overwrites db unless <paramref name="accumulate"/>.</summary>
    public static void Conv2dBackwardBias<T>(in Conv2dGeometry g, ReadOnlySpan<T> dy, Span<T> db, bool accumulate = false)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        g.Validate();
        KernelChecks.Exact(dy.Length, g.OutputLength, nameof(dy));
        KernelChecks.Exact(db.Length, g.OutChannels, nameof(db));
        int plane = g.OutHeight * g.OutWidth;
        for (int o = 0; o < g.OutChannels; o++)
        {
            T sum = T.Zero;
            for (int n = 0; n < g.Batch; n++)
                for (int s = 0; s < plane; s++) sum += dy[(n * g.OutChannels + o) * plane + s];
            db[o] = accumulate ? db[o] + sum : sum;
        }
    }

    internal static void Check(in Conv2dGeometry g, int xLength, int wLength, int yLength)
    {
        g.Validate();
        KernelChecks.Exact(xLength, g.InputLength, "x");
        KernelChecks.Exact(wLength, g.WeightLength, "w");
        KernelChecks.Exact(yLength, g.OutputLength, "y");
    }

    private static bool TryInput(in Conv2dGeometry g, int n, int channel, int oh, int ow, int i, int j, out int index)
    {
        int ih = oh * g.StrideH - g.PadTop + i * g.DilationH;
        int iw = ow * g.StrideW - g.PadLeft + j * g.DilationW;
        bool inside = ih >= 0 && ih < g.Height && iw >= 0 && iw < g.Width;
        index = inside ? ((n * g.InChannels + channel) * g.Height + ih) * g.Width + iw : -1;
        return inside;
    }

    private static int WeightIndex(in Conv2dGeometry g, int o, int c, int i, int j) =>
        ((o * g.InChannelsPerGroup + c) * g.KernelH + i) * g.KernelW + j;

    private static int OutputIndex(in Conv2dGeometry g, int n, int o, int oh, int ow) =>
        ((n * g.OutChannels + o) * g.OutHeight + oh) * g.OutWidth + ow;
}
