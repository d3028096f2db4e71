using System.Numerics;
using CudaDream.Engine.Backends.Cpu.Kernels;

namespace CudaDream.Engine.Ops;

/// <summary>
/// Constant padding of the two spatial dims of NCHW (ONNX Pad mode=constant on axes H, W):
/// y [N, C, top+H+bottom, left+W+right], y[n,c,i,j] = x[n,c,i−top,j−left] inside, value outside.
/// Negative pads crop, as in ONNX. (The backward is the Slice of dy the input landed in: Pad's gradient rule.)
/// </summary>
public static class PadReference
{
    public static void ConstantForward<T>(int n, int c, int h, int w, int padTop, int padLeft, int padBottom, int padRight, T value,
        ReadOnlySpan<T> x, Span<T> y)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        (int outH, int outW) = Check(n, c, h, w, padTop, padLeft, padBottom, padRight, x.Length, y.Length);
        for (int plane = 0; plane < n * c; plane++)
        for (int i = 0; i < outH; i++)
        for (int j = 0; j < outW; j++)
        {
            int si = i - padTop, sj = j - padLeft;
            bool inside = si >= 0 && si < h && sj >= 0 && sj < w;
            y[(plane * outH + i) * outW + j] = inside ? x[(plane * h + si) * w + sj] : value;
        }
    }

    public static (int OutH, int OutW) OutputSize(int h, int w, int padTop, int padLeft, int padBottom, int padRight) =>
        (h + padTop + padBottom, w + padLeft + padRight);

    private static (int, int) Check(int n, int c, int h, int w, int padTop, int padLeft, int padBottom, int padRight, int x, int y)
    {
        KernelChecks.Positive(n, nameof(n));
        KernelChecks.Positive(c, nameof(c));
        KernelChecks.Positive(h, nameof(h));
        KernelChecks.Positive(w, nameof(w));
        (int outH, int outW) = OutputSize(h, w, padTop, padLeft, padBottom, padRight);
        if (outH <= 0 || outW <= 0) throw new ArgumentException($"pads ({padTop},{padLeft},{padBottom},{padRight}) crop the {h}×{w} input to nothing");
        KernelChecks.Exact(x, (long)n * c * h * w, "x");
        KernelChecks.Exact(y, (long)n * c * outH * outW, "y");
        return (outH, outW);
    }
}
