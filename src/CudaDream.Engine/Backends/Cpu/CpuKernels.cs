using System.Numerics;
using CudaDream.Engine.Backends.Cpu.Kernels;

namespace CudaDream.Engine.Backends.Cpu;

/// <summary>
/// Chooses between the fast fp32 kernels and the reference kernels: fast when the context allows it
/// and T is float; the reference loops otherwise (float64 for gradient checks, or on request).
/// </summary>
internal static class CpuKernels
{
    private static bool Fast<T>(CpuContext c) => c.UseFastKernels && typeof(T) == typeof(float);

    private static ReadOnlySpan<float> F<T>(ReadOnlySpan<T> s) where T : unmanaged => System.Runtime.InteropServices.MemoryMarshal.Cast<T, float>(s);
    private static Span<float> F<T>(Span<T> s) where T : unmanaged => System.Runtime.InteropServices.MemoryMarshal.Cast<T, float>(s);

    public static void Gemm<T>(CpuContext c, bool transA, bool transB, int m, int n, int k, T alpha, ReadOnlySpan<T> a, int lda, ReadOnlySpan<T> b, int ldb, T beta, Span<T> y, int ldc)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        if (Fast<T>(c)) GemmFast.Gemm(transA, transB, m, n, k, float.CreateTruncating(alpha), F(a), lda, F(b), ldb, float.CreateTruncating(beta), F(y), ldc);
        else GemmReference.Gemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, y, ldc);
    }

    public static void Conv2dForward<T>(CpuContext c, in Conv2dGeometry g, ReadOnlySpan<T> x, ReadOnlySpan<T> w, ReadOnlySpan<T> bias, Span<T> y)
        where T : unmanaged, IFloatingPointIeee754<T> =>
        ConvReference.Conv2dForward(g, x, w, bias, y);

    public static void GroupNormForward<T>(CpuContext c, int n, int ch, int s, int groups, T eps, ReadOnlySpan<T> x, ReadOnlySpan<T> gamma, ReadOnlySpan<T> beta, Span<T> y, Span<T> mean, Span<T> rstd, bool silu)
        where T : unmanaged, IFloatingPointIeee754<T> =>
        GroupNormReference.Forward(n, ch, s, groups, eps, x, gamma, beta, y, mean, rstd, silu);

    public static void LayerNormForward<T>(CpuContext c, int rows, int dim, T eps, ReadOnlySpan<T> x, ReadOnlySpan<T> gamma, ReadOnlySpan<T> beta, Span<T> y, Span<T> mean, Span<T> rstd)
        where T : unmanaged, IFloatingPointIeee754<T> =>
        LayerNormReference.Forward(rows, dim, eps, x, gamma, beta, y, mean, rstd);

    public static void SoftmaxForward<T>(CpuContext c, int rows, int dim, ReadOnlySpan<T> x, Span<T> y)
        where T : unmanaged, IFloatingPointIeee754<T> =>
        SoftmaxReference.Forward(rows, dim, x, y);

    public static void AttentionForward<T>(CpuContext c, in AttentionShape shape, ReadOnlySpan<T> q, ReadOnlySpan<T> k, ReadOnlySpan<T> v, Span<T> o, Span<T> lse)
        where T : unmanaged, IFloatingPointIeee754<T> =>
        AttentionReference.Forward(shape, q, k, v, o, lse);
}
