using System.Numerics;
using CudaDream.Engine.Backends.Cpu.Kernels;

namespace CudaDream.Engine.Ops;

/// <summary>
/// Nearest-neighbour resize of NCHW planes as ONNX Resize(mode=nearest,
/// coordinate_transformation_mode=asymmetric, nearest_mode=floor) — the UNet/VAE upsampler:
/// y[oh, ow] = x[floor(oh·H/Ho), floor(ow·W/Wo)]. The source index is computed in exact integer
/// arithmetic; ONNX Runtime computes oh/(Ho/H) in float, which agrees for integer scale factors
/// (the only ones SD uses). The backward sums each output gradient into its source pixel.
/// </summary>
public static class ResizeReference
{
    public static void NearestForward<T>(int n, int c, int h, int w, int outH, int outW, ReadOnlySpan<T> x, Span<T> y)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        Check(n, c, h, w, outH, outW, x.Length, y.Length);
        for (int plane = 0; plane < n * c; plane++)
        for (int oh = 0; oh < outH; oh++)
        for (int ow = 0; ow < outW; ow++)
            y[(plane * outH + oh) * outW + ow] = x[(plane * h + SourceIndex(oh, h, outH)) * w + SourceIndex(ow, w, outW)];
    }

    /// <summary>dx[ih, iw] = Σ over outputs that read (ih, iw) of dy. Overwrites dx.</summary>
    public static void NearestBackward<T>(int n, int c, int h, int w, int outH, int outW, ReadOnlySpan<T> dy, Span<T> dx)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        Check(n, c, h, w, outH, outW, dx.Length, dy.Length);
        dx.Clear();
        for (int plane = 0; plane < n * c; plane++)
        for (int oh = 0; oh < outH; oh++)
        for (int ow = 0; ow < outW; ow++)
            dx[(plane * h + SourceIndex(oh, h, outH)) * w + SourceIndex(ow, w, outW)] += dy[(plane * outH + oh) * outW + ow];
    }

    /// <summary>floor(dst · in / out), exactly.</summary>
    internal static int SourceIndex(int dst, int inSize, int outSize) => (int)((long)dst * inSize / outSize);

    private static void Check(int n, int c, int h, int w, int outH, int outW, int x, int y)
    {
        KernelChecks.Positive(n, nameof(n));
        KernelChecks.Positive(c, nameof(c));
        KernelChecks.Positive(h, nameof(h));
        KernelChecks.Positive(w, nameof(w));
        KernelChecks.Positive(outH, nameof(outH));
        KernelChecks.Positive(outW, nameof(outW));
        KernelChecks.Exact(x, (long)n * c * h * w, "x");
        KernelChecks.Exact(y, (long)n * c * outH * outW, "y");
    }
}
