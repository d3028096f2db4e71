using System.Numerics;
using CudaDream.Engine.Backends.Cpu.Kernels;

namespace CudaDream.Engine.Ops;

/// <summary>
/// Softmax over the last dimension of [R, D]: y = exp(x − max) / Σ exp(x − max).
/// Subtracting the row maximum keeps it exact for −inf entries and for finite masks such as −3.4e38
/// (a row whose entries are all −3.4e38 is uniform, as in PyTorch). A row whose entries are ALL −inf
/// has no defined softmax (PyTorch gives NaN); here it gives zeros, so a fully masked query row
/// contributes nothing instead of poisoning the step. +inf or NaN entries give NaN.
/// </summary>
public static class SoftmaxReference
{
    public static void Forward<T>(int rows, int dim, ReadOnlySpan<T> x, Span<T> y)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        Check(rows, dim, x.Length, y.Length);
        for (int r = 0; r < rows; r++)
        {
            var xr = x.Slice(r * dim, dim);
            var yr = y.Slice(r * dim, dim);
            T max = T.NegativeInfinity;
            foreach (T v in xr) max = T.Max(max, v);
            if (T.IsNegativeInfinity(max)) { yr.Clear(); continue; }
            T sum = T.Zero;
            for (int i = 0; i < dim; i++) { yr[i] = T.Exp(xr[i] - max); sum += yr[i]; }
            for (int i = 0; i < dim; i++) yr[i] /= sum;
        }
    }

    /// <summary>dx = y ⊙ (dy − Σ y·dy), from the forward's output y. Overwrites dx.</summary>
    public static void Backward<T>(int rows, int dim, ReadOnlySpan<T> y, ReadOnlySpan<T> dy, Span<T> dx)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        Check(rows, dim, y.Length, dx.Length);
        KernelChecks.Exact(dy.Length, (long)rows * dim, nameof(dy));
        for (int r = 0; r < rows; r++)
        {
            T dot = T.Zero;
            for (int i = 0; i < dim; i++) dot += y[r * dim + i] * dy[r * dim + i];
            for (int i = 0; i < dim; i++) dx[r * dim + i] = y[r * dim + i] * (dy[r * dim + i] - dot);
        }
    }

    internal static void Check(int rows, int dim, int xLength, int yLength)
    {
        KernelChecks.NonNegative(rows, nameof(rows));
        KernelChecks.Positive(dim, nameof(dim));
        KernelChecks.Exact(xLength, (long)rows * dim, "x");
        KernelChecks.Exact(yLength, (long)rows * dim, "y");
    }
}
