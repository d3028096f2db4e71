using System.Numerics.Tensors;
using CudaDream.Engine.Backends.Cpu.Kernels;

namespace CudaDream.Engine.Ops;

/// <summary>
/// fp32 softmax over the last dimension with the contract of <see cref="SoftmaxReference"/> (all −inf row → zeros),
/// vectorised per row with <see cref="TensorPrimitives"/> and parallel over row ranges.
/// </summary>
public static class SoftmaxFast
{
    public static void Forward(int rows, int dim, ReadOnlySpan<float> x, Span<float> y)
    {
        SoftmaxReference.Check(rows, dim, x.Length, y.Length);
        unsafe
        {
            fixed (float* px = x, py = y)
            {
                nint xBase = (nint)px, yBase = (nint)py;
                VectorMath.ForRanges(rows, Parts(rows, dim), (start, end) =>
                {
                    for (int r = start; r < end; r++)
                    {
                        var xr = new ReadOnlySpan<float>((float*)xBase + (long)r * dim, dim);
                        var yr = new Span<float>((float*)yBase + (long)r * dim, dim);
                        float max = TensorPrimitives.Max(xr);
                        if (float.IsNegativeInfinity(max)) { yr.Clear(); continue; }
                        TensorPrimitives.Subtract(xr, max, yr);
                        TensorPrimitives.Exp(yr, yr);
                        TensorPrimitives.Multiply(yr, 1f / TensorPrimitives.Sum(yr), yr);
                    }
                });
            }
        }
    }

    /// <summary>dx = y ⊙ (dy − Σ y·dy). Overwrites dx.</summary>
    public static void Backward(int rows, int dim, ReadOnlySpan<float> y, ReadOnlySpan<float> dy, Span<float> dx)
    {
        SoftmaxReference.Check(rows, dim, y.Length, dx.Length);
        KernelChecks.Exact(dy.Length, (long)rows * dim, nameof(dy));
        unsafe
        {
            fixed (float* py = y, pdy = dy, pdx = dx)
            {
                nint yBase = (nint)py, dyBase = (nint)pdy, dxBase = (nint)pdx;
                VectorMath.ForRanges(rows, Parts(rows, dim), (start, end) =>
                {
                    for (int r = start; r < end; r++)
                    {
                        var yr = new ReadOnlySpan<float>((float*)yBase + (long)r * dim, dim);
                        var dyr = new ReadOnlySpan<float>((float*)dyBase + (long)r * dim, dim);
                        var dxr = new Span<float>((float*)dxBase + (long)r * dim, dim);
                        float dot = TensorPrimitives.Dot(yr, dyr);
                        TensorPrimitives.Subtract(dyr, dot, dxr);
                        TensorPrimitives.Multiply(dxr, yr, dxr);
                    }
                });
            }
        }
    }

    private static int Parts(int rows, int dim) =>
        (long)rows * dim < 1 << 15 ? 1 : Math.Min(rows, CpuKernelOptions.MaxDegreeOfParallelism);
}
