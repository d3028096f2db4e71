using System.Buffers;
using System.Numerics.Tensors;
using CudaDream.Engine.Backends.Cpu.Kernels;

namespace CudaDream.Engine.Ops;

/// <summary>
/// fp32 2-D convolution with the contract of <see cref="ConvReference"/>, lowered to <see cref="GemmFast"/>
/// (Chellapilla et al. 2006, "High performance convolutional neural networks for document processing"):
/// per (sample, group), the input patches are unfolded into a column matrix col [Cin/G·kh·kw, Ho·Wo]
/// (im2col) so that y_g = W_g · col, dcol = W_gᵀ · dy_g (folded back with col2im) and dW_g += dy_g · colᵀ.
/// A 1×1 / stride 1 / unpadded convolution needs no unfolding: x itself is the column matrix. The
/// unfolded matrix is built in column chunks of bounded size, so a 512×512 VAE layer does not need a
/// gigabyte of scratch. Parallel over (sample, group) when there are enough of them, else inside the GEMM.
/// Small stride-1 convolutions skip im2col: <see cref="ConvShifted"/>.
/// </summary>
public static unsafe class ConvFast
{
    /// <summary>Most floats one im2col buffer holds (16 MiB).</summary>
    private const long ColumnBudget = 1 << 22;

    /// <summary>y = conv(x, w) + bias (bias empty = none). Overwrites y.</summary>
    public static void Conv2dForward(in Conv2dGeometry g, ReadOnlySpan<float> x, ReadOnlySpan<float> w, ReadOnlySpan<float> bias, Span<float> y)
    {
        ConvReference.Check(g, x.Length, w.Length, y.Length);
        KernelChecks.Optional(bias.Length, g.OutChannels, nameof(bias));
        var geometry = g;
        fixed (float* px = x, pw = w, pb = bias, py = y)
        {
            if (ConvShifted.SuitsForward(g))
            {
                ConvShifted.Forward(g, px, pw, bias.IsEmpty ? null : pb, py, CpuKernelOptions.MaxDegreeOfParallelism);
                return;
            }
            nint xBase = (nint)px, wBase = (nint)pw, bBase = (nint)pb, yBase = (nint)py;
            bool hasBias = !bias.IsEmpty;
            ForEachItem(g, (item, degree) => ForwardItem(geometry, item, (float*)xBase, (float*)wBase, hasBias ? (float*)bBase : null, (float*)yBase, degree));
        }
    }

    /// <summary>dx = convᵀ(dy, w). Overwrites dx.</summary>
    public static void Conv2dBackwardData(in Conv2dGeometry g, ReadOnlySpan<float> dy, ReadOnlySpan<float> w, Span<float> dx)
    {
        ConvReference.Check(g, dx.Length, w.Length, dy.Length);
        var geometry = g;
        fixed (float* pdy = dy, pw = w, pdx = dx)
        {
            if (ConvShifted.SuitsBackward(g))
            {
                ConvShifted.BackwardData(g, pdy, pw, pdx, CpuKernelOptions.MaxDegreeOfParallelism);
                return;
            }
            nint dyBase = (nint)pdy, wBase = (nint)pw, dxBase = (nint)pdx;
            ForEachItem(g, (item, degree) => BackwardDataItem(geometry, item, (float*)dyBase, (float*)wBase, (float*)dxBase, degree));
        }
    }

    /// <summary>
    /// dw = Σ_n dy ⋆ x. Overwrites dw, or adds to it when <paramref name="accumulate"/>. With several threads
    /// and samples, each thread sums a slice of the batch into its own buffer and the buffers are added at the end.
    /// </summary>
    public static void Conv2dBackwardWeight(in Conv2dGeometry g, ReadOnlySpan<float> x, ReadOnlySpan<float> dy, Span<float> dw, bool accumulate = false)
    {
        ConvReference.Check(g, x.Length, dw.Length, dy.Length);
        if (!accumulate) dw.Clear();
        var geometry = g;
        int degree = CpuKernelOptions.MaxDegreeOfParallelism;
        int slices = Math.Min(degree, g.Batch);
        fixed (float* px = x, pdy = dy, pdw = dw)
        {
            if (slices <= 1)
            {
                for (int n = 0; n < g.Batch; n++) BackwardWeightSample(g, n, px, pdy, pdw, degree);
                return;
            }
            int weightLength = (int)g.WeightLength;
            float[] partials = ArrayPool<float>.Shared.Rent(checked(weightLength * (slices - 1)));
            try
            {
                Array.Clear(partials, 0, weightLength * (slices - 1));
                fixed (float* pPartials = partials)
                {
                    nint xBase = (nint)px, dyBase = (nint)pdy, dwBase = (nint)pdw, partialBase = (nint)pPartials;
                    Parallel.For(0, slices, CpuKernelOptions.ParallelOptions(degree), slice =>
                    {
                        float* target = slice == 0 ? (float*)dwBase : (float*)partialBase + (long)(slice - 1) * weightLength;
                        for (int n = slice; n < geometry.Batch; n += slices)
                            BackwardWeightSample(geometry, n, (float*)xBase, (float*)dyBase, target, 1);
                    });
                    for (int s = 1; s < slices; s++)
                    {
                        var part = new ReadOnlySpan<float>(pPartials + (long)(s - 1) * weightLength, weightLength);
                        TensorPrimitives.Add(dw, part, dw);
                    }
                }
            }
            finally
            {
                ArrayPool<float>.Shared.Return(partials);
            }
        }
    }

    /// <summary>dbias[o] = Σ_{n,oh,ow} dy. Overwrites db unless <paramref name="accumulate"/>.</summary>
    public static void Conv2dBackwardBias(in Conv2dGeometry g, ReadOnlySpan<float> dy, Span<float> db, bool accumulate = false)
    {
        g.Validate();
        KernelChecks.Exact(dy.Length, g.OutputLength, nameof(dy));
        KernelChecks.Exact(db.Length, g.OutChannels, nameof(db));
        int plane = g.OutHeight * g.OutWidth;
        for (int o = 0; o < g.OutChannels; o++)
        {
            float sum = 0f;
            for (int n = 0; n < g.Batch; n++) sum += TensorPrimitives.Sum(dy.Slice((n * g.OutChannels + o) * plane, plane));
            db[o] = accumulate ? db[o] + sum : sum;
        }
    }

    /// <summary>Runs body over the N·G (sample, group) items: in parallel when they can occupy every thread, else one by one with a parallel GEMM.</summary>
    private static void ForEachItem(in Conv2dGeometry g, Action<int, int> body)
    {
        int degree = CpuKernelOptions.MaxDegreeOfParallelism;
        int items = g.Batch * g.Groups;
        if (degree > 1 && items >= degree)
            Parallel.For(0, items, CpuKernelOptions.ParallelOptions(degree), item => body(item, 1));
        else
            for (int item = 0; item < items; item++) body(item, degree);
    }

    private static void ForwardItem(in Conv2dGeometry g, int item, float* x, float* w, float* bias, float* y, int degree)
    {
        int n = item / g.Groups, grp = item % g.Groups;
        int cinG = g.InChannelsPerGroup, coutG = g.OutChannelsPerGroup;
        int depth = cinG * g.KernelH * g.KernelW, plane = g.OutHeight * g.OutWidth;
        float* wG = w + (long)grp * coutG * depth;
        float* xG = x + ((long)n * g.InChannels + grp * cinG) * g.Height * g.Width;
        float* yG = y + ((long)n * g.OutChannels + grp * coutG) * plane;
        var geometry = g;
        if (g.IsPointwise)
            GemmFast.Run(false, false, coutG, plane, depth, 1f, wG, depth, xG, plane, 0f, yG, plane, degree);
        else
            WithColumns(g, depth, plane, (col, c0, cc) =>
            {
                Im2Col(geometry, xG, c0, cc, col, degree);
                GemmFast.Run(false, false, coutG, cc, depth, 1f, wG, depth, col, cc, 0f, yG + c0, plane, degree);
            });
        if (bias != null)
            for (int o = 0; o < coutG; o++)
            {
                var row = new Span<float>(yG + (long)o * plane, plane);
                TensorPrimitives.Add(row, bias[grp * coutG + o], row);
            }
    }

    private static void BackwardDataItem(in Conv2dGeometry g, int item, float* dy, float* w, float* dx, int degree)
    {
        int n = item / g.Groups, grp = item % g.Groups;
        int cinG = g.InChannelsPerGroup, coutG = g.OutChannelsPerGroup;
        int depth = cinG * g.KernelH * g.KernelW, plane = g.OutHeight * g.OutWidth;
        float* wG = w + (long)grp * coutG * depth;
        float* dyG = dy + ((long)n * g.OutChannels + grp * coutG) * plane;
        float* dxG = dx + ((long)n * g.InChannels + grp * cinG) * g.Height * g.Width;
        if (g.IsPointwise)
        {
            GemmFast.Run(true, false, depth, plane, coutG, 1f, wG, depth, dyG, plane, 0f, dxG, plane, degree);
            return;
        }
        new Span<float>(dxG, cinG * g.Height * g.Width).Clear();
        var geometry = g;
        WithColumns(g, depth, plane, (col, c0, cc) =>
        {
            GemmFast.Run(true, false, depth, cc, coutG, 1f, wG, depth, dyG + c0, plane, 0f, col, cc, degree);
            Col2ImAdd(geometry, col, c0, cc, dxG, degree);
        });
    }

    /// <summary>dW_g += dy_g · colᵀ for every group of sample n.</summary>
    private static void BackwardWeightSample(in Conv2dGeometry g, int n, float* x, float* dy, float* dw, int degree)
    {
        int cinG = g.InChannelsPerGroup, coutG = g.OutChannelsPerGroup;
        int depth = cinG * g.KernelH * g.KernelW, plane = g.OutHeight * g.OutWidth;
        for (int grp = 0; grp < g.Groups; grp++)
        {
            float* dwG = dw + (long)grp * coutG * depth;
            float* dyG = dy + ((long)n * g.OutChannels + grp * coutG) * plane;
            float* xG = x + ((long)n * g.InChannels + grp * cinG) * g.Height * g.Width;
            if (g.IsPointwise)
            {
                GemmFast.Run(false, true, coutG, depth, plane, 1f, dyG, plane, xG, plane, 1f, dwG, depth, degree);
                continue;
            }
            var geometry = g;
            WithColumns(g, depth, plane, (col, c0, cc) =>
            {
                Im2Col(geometry, xG, c0, cc, col, degree);
                GemmFast.Run(false, true, coutG, depth, cc, 1f, dyG + c0, plane, col, cc, 1f, dwG, depth, degree);
            });
        }
    }

    private delegate void ColumnChunk(float* col, int firstColumn, int columns);

    /// <summary>Hands body a pooled [depth × columns] buffer for successive column chunks covering the output plane.</summary>
    private static void WithColumns(in Conv2dGeometry g, int depth, int plane, ColumnChunk body)
    {
        int chunk = (int)Math.Clamp(ColumnBudget / depth, 1, plane);
        float[] buffer = ArrayPool<float>.Shared.Rent(depth * chunk);
        try
        {
            fixed (float* col = buffer)
                for (int c0 = 0; c0 < plane; c0 += chunk) body(col, c0, Math.Min(chunk, plane - c0));
        }
        finally
        {
            ArrayPool<float>.Shared.Return(buffer);
        }
    }

    /// <summary>
    /// col[(c·kh + i)·kw + j, t] = x[c, oh·sh − pt + i·dh, ow·sw − pl + j·dw] (0 outside) for the output
    /// positions c0 ≤ oh·Wo + ow &lt; c0 + cc, x being one sample's channels of one group.
    /// </summary>
    private static void Im2Col(in Conv2dGeometry g, float* x, int c0, int cc, float* col, int degree)
    {
        var geometry = g;
        ForChannels(g, cc, degree, c => Im2ColChannel(geometry, x, c0, cc, col, c));
    }

    /// <summary>Runs body for every input channel of a group; channels touch disjoint rows of col and planes of x, so they run in parallel.</summary>
    private static void ForChannels(in Conv2dGeometry g, int columns, int degree, Action<int> body)
    {
        int channels = g.InChannelsPerGroup;
        if (degree > 1 && channels > 1 && (long)channels * g.KernelH * g.KernelW * columns >= 1 << 16)
            Parallel.For(0, channels, CpuKernelOptions.ParallelOptions(degree), body);
        else
            for (int c = 0; c < channels; c++) body(c);
    }

    private static void Im2ColChannel(Conv2dGeometry g, float* x, int c0, int cc, float* col, int c)
    {
        int wo = g.OutWidth;
        for (int i = 0; i < g.KernelH; i++)
        for (int j = 0; j < g.KernelW; j++)
        {
            float* dst = col + (long)((c * g.KernelH + i) * g.KernelW + j) * cc;
            float* channel = x + (long)c * g.Height * g.Width;
            int oh = c0 / wo, ow = c0 % wo;
            for (int t = 0; t < cc;)
            {
                int run = Math.Min(wo - ow, cc - t); // the rest of this output row inside the chunk
                int ih = oh * g.StrideH - g.PadTop + i * g.DilationH;
                if (ih < 0 || ih >= g.Height)
                    new Span<float>(dst + t, run).Clear();
                else
                {
                    float* src = channel + (long)ih * g.Width;
                    int iw = ow * g.StrideW - g.PadLeft + j * g.DilationW;
                    if (g.StrideW == 1)
                    {
                        // Unit stride: zeros left of the image, one contiguous copy, zeros right of it.
                        var (lo, hi) = InsideRange(iw, run, g.Width);
                        new Span<float>(dst + t, lo).Clear();
                        new ReadOnlySpan<float>(src + iw + lo, hi - lo).CopyTo(new Span<float>(dst + t + lo, hi - lo));
                        new Span<float>(dst + t + hi, run - hi).Clear();
                    }
                    else
                        for (int r = 0; r < run; r++, iw += g.StrideW)
                            dst[t + r] = (uint)iw < (uint)g.Width ? src[iw] : 0f;
                }
                t += run;
                ow = 0;
                oh++;
            }
        }
    }

    /// <summary>The r in [0, run) with 0 ≤ first + r &lt; width, as [lo, hi) (empty: lo = hi).</summary>
    private static (int Lo, int Hi) InsideRange(int first, int run, int width)
    {
        int lo = Math.Clamp(-first, 0, run);
        int hi = Math.Clamp(width - first, lo, run);
        return (lo, hi);
    }

    /// <summary>The adjoint of <see cref="Im2Col"/>: adds every column entry back into the input pixel it was read from.</summary>
    private static void Col2ImAdd(in Conv2dGeometry g, float* col, int c0, int cc, float* dx, int degree)
    {
        var geometry = g;
        ForChannels(g, cc, degree, c => Col2ImAddChannel(geometry, col, c0, cc, dx, c));
    }

    private static void Col2ImAddChannel(Conv2dGeometry g, float* col, int c0, int cc, float* dx, int c)
    {
        int wo = g.OutWidth;
        for (int i = 0; i < g.KernelH; i++)
        for (int j = 0; j < g.KernelW; j++)
        {
            float* src = col + (long)((c * g.KernelH + i) * g.KernelW + j) * cc;
            float* channel = dx + (long)c * g.Height * g.Width;
            int oh = c0 / wo, ow = c0 % wo;
            for (int t = 0; t < cc;)
            {
                int run = Math.Min(wo - ow, cc - t);
                int ih = oh * g.StrideH - g.PadTop + i * g.DilationH;
                if (ih >= 0 && ih < g.Height)
                {
                    float* dst = channel + (long)ih * g.Width;
                    int iw = ow * g.StrideW - g.PadLeft + j * g.DilationW;
                    if (g.StrideW == 1)
                    {
                        var (lo, hi) = InsideRange(iw, run, g.Width);
                        var target = new Span<float>(dst + iw + lo, hi - lo);
                        TensorPrimitives.Add(target, new ReadOnlySpan<float>(src + t + lo, hi - lo), target);
                    }
                    else
                        for (int r = 0; r < run; r++, iw += g.StrideW)
                            if ((uint)iw < (uint)g.Width) dst[iw] += src[t + r];
                }
                t += run;
                ow = 0;
                oh++;
            }
        }
    }
}
