using System.Numerics;
using System.Runtime.InteropServices;
using CudaDream.Engine.Backends.Cpu.Kernels;

namespace CudaDream.Engine.Backends.Cpu;

/// <summary>
/// Chooses between the fast fp32 kernels and the reference kernels: fast when the context allows it
/// and T is float; the reference loops otherwise (float64 for gradient checks, or on request).
/// Both have the same signature, so each method is a one-line switch.
/// </summary>
internal static class CpuKernels
{
    private static bool Fast<T>(CpuContext c) => c.UseFastKernels && typeof(T) == typeof(float);

    private static ReadOnlySpan<float> F<T>(ReadOnlySpan<T> s) where T : unmanaged => MemoryMarshal.Cast<T, float>(s);
    private static Span<float> F<T>(Span<T> s) where T : unmanaged => MemoryMarshal.Cast<T, float>(s);
    private static float F<T>(T v) where T : INumberBase<T> => float.CreateTruncating(v);

    public static void Gemm<T>(CpuContext c, bool transA, bool transB, int m, int n, int k, T alpha, ReadOnlySpan<T> a, int lda, ReadOnlySpan<T> b, int ldb, T beta, Span<T> y, int ldc)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        if (Fast<T>(c)) GemmFast.Gemm(transA, transB, m, n, k, F(alpha), F(a), lda, F(b), ldb, F(beta), F(y), ldc);
        else GemmReference.Gemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, y, ldc);
    }

    public static void GemmStridedBatched<T>(CpuContext c, bool transA, bool transB, int m, int n, int k, T alpha, ReadOnlySpan<T> a, int lda, ReadOnlySpan<T> b, int ldb,
        T beta, Span<T> y, int ldc, int batch, long strideA, long strideB, long strideC)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        if (Fast<T>(c)) GemmFast.GemmStridedBatched(transA, transB, m, n, k, F(alpha), F(a), lda, F(b), ldb, F(beta), F(y), ldc, batch, strideA, strideB, strideC);
        else GemmReference.GemmStridedBatched(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, y, ldc, batch, strideA, strideB, strideC);
    }

    public static void Conv2dForward<T>(CpuContext c, in Conv2dGeometry g, ReadOnlySpan<T> x, ReadOnlySpan<T> w, ReadOnlySpan<T> bias, Span<T> y)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        if (Fast<T>(c)) ConvFast.Conv2dForward(g, F(x), F(w), F(bias), F(y));
        else ConvReference.Conv2dForward(g, x, w, bias, y);
    }

    public static void Conv2dBackwardData<T>(CpuContext c, in Conv2dGeometry g, ReadOnlySpan<T> dy, ReadOnlySpan<T> w, Span<T> dx)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        if (Fast<T>(c)) ConvFast.Conv2dBackwardData(g, F(dy), F(w), F(dx));
        else ConvReference.Conv2dBackwardData(g, dy, w, dx);
    }

    public static void Conv2dBackwardWeight<T>(CpuContext c, in Conv2dGeometry g, ReadOnlySpan<T> x, ReadOnlySpan<T> dy, Span<T> dw)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        if (Fast<T>(c)) ConvFast.Conv2dBackwardWeight(g, F(x), F(dy), F(dw));
        else ConvReference.Conv2dBackwardWeight(g, x, dy, dw);
    }


}
