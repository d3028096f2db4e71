using System.Numerics;

namespace CudaDream.Engine.Backends.Cpu.Kernels;

/// <summary>
/// Constant padding of the two spatial dims of NCHW (ONNX Pad mode=constant on axes H, W):
/// y [N, C, top+H+bottom, left+W+right], y[n,c,i,j] = x[n,c,i−top,j−left] inside, value outside.
/// Negative pads crop, as in ONNX. The backward is the slice of dy that the input landed in.
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

    /// <summary>dx[n,c,i,j] = dy[n,c,i+top,j+left] (0 where a negative pad cropped the input). Overwrites dx.</summary>
    public static void ConstantBackward<T>(int n, int c, int h, int w, int padTop, int padLeft, int padBottom, int padRight,
        ReadOnlySpan<T> dy, Span<T> dx)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        (int outH, int outW) = Check(n, c, h, w, padTop, padLeft, padBottom, padRight, dx.Length, dy.Length);
        for (int plane = 0; plane < n * c; plane++)
        for (int i = 0; i < h; i++)
        for (int j = 0; j < w; j++)
        {
            int oi = i + padTop, oj = j + padLeft;
            bool inside = oi >= 0 && oi < outH && oj >= 0 && oj < outW;
            dx[(plane * h + i) * w + j] = inside ? dy[(plane * outH + oi) * outW + oj] : T.Zero;
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
