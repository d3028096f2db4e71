using System.Numerics;
using CudaDream.Engine.Backends.Cpu.Kernels;

namespace CudaDream.Engine.Ops;

/// <summary>
/// General matrix multiply, BLAS semantics on ROW-MAJOR storage: C = alpha·op(A)·op(B) + beta·C, where
/// op(A) is m×k and op(B) is k×n. Without transposition A is stored m×k (element (i,p) at a[i·lda + p]);
/// with <c>transA</c> A is stored k×m and op(A)(i,p) = a[p·lda + i]; likewise B. C is m×n at c[i·ldc + j].
/// beta == 0 overwrites C without reading it (NaN or garbage in C does not leak into the result);
/// alpha == 0 leaves the product out and reads neither A nor B.
/// The backward of C = A·B is two more GEMMs (dA = dC·Bᵀ, dB = Aᵀ·dC), so there is no separate backward.
/// </summary>
public static class GemmReference
{
    public static void Gemm<T>(bool transA, bool transB, int m, int n, int k, T alpha, ReadOnlySpan<T> a, int lda,
        ReadOnlySpan<T> b, int ldb, T beta, Span<T> c, int ldc)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        CheckGemm(transA, transB, m, n, k, a.Length, lda, b.Length, ldb, c.Length, ldc);
        for (int i = 0; i < m; i++)
        {
            for (int j = 0; j < n; j++)
            {
                T sum = T.Zero;
                if (alpha != T.Zero)
                {
                    for (int p = 0; p < k; p++)
                    {
                        T aip = transA ? a[p * lda + i] : a[i * lda + p];
                        T bpj = transB ? b[j * ldb + p] : b[p * ldb + j];
                        sum += aip * bpj;
                    }
                }
                T prior = beta == T.Zero ? T.Zero : beta * c[i * ldc + j];
                c[i * ldc + j] = alpha * sum + prior;
            }
        }
    }

    /// <summary>
    /// <paramref name="batch"/> independent GEMMs; matrix i of A starts at a[i·strideA] (B and C likewise).
    /// A stride of 0 for A or B broadcasts one matrix to every batch; C needs non-overlapping matrices.
    /// </summary>
    public static void GemmStridedBatched<T>(bool transA, bool transB, int m, int n, int k, T alpha, ReadOnlySpan<T> a, int lda,
        ReadOnlySpan<T> b, int ldb, T beta, Span<T> c, int ldc, int batch, long strideA, long strideB, long strideC)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        CheckBatched(transA, transB, m, n, k, a.Length, lda, b.Length, ldb, c.Length, ldc, batch, strideA, strideB, strideC);
        long extentA = ExtentA(transA, m, k, lda), extentB = ExtentB(transB, n, k, ldb), extentC = KernelChecks.MatrixExtent(m, n, ldc);
        for (int i = 0; i < batch; i++)
        {
            Gemm(transA, transB, m, n, k, alpha,
                Matrix(a, i * strideA, extentA), lda,
                Matrix(b, i * strideB, extentB), ldb,
                beta, extentC == 0 ? Span<T>.Empty : c.Slice((int)(i * strideC), (int)extentC), ldc);
        }
    }

    private static ReadOnlySpan<T> Matrix<T>(ReadOnlySpan<T> all, long start, long extent) =>
        extent == 0 ? ReadOnlySpan<T>.Empty : all.Slice((int)start, (int)extent);

    internal static long ExtentA(bool transA, int m, int k, int lda) =>
        transA ? KernelChecks.MatrixExtent(k, m, lda) : KernelChecks.MatrixExtent(m, k, lda);

    internal static long ExtentB(bool transB, int n, int k, int ldb) =>
        transB ? KernelChecks.MatrixExtent(n, k, ldb) : KernelChecks.MatrixExtent(k, n, ldb);

    internal static void CheckGemm(bool transA, bool transB, int m, int n, int k, int aLength, int lda, int bLength, int ldb, int cLength, int ldc)
    {
        KernelChecks.NonNegative(m, nameof(m));
        KernelChecks.NonNegative(n, nameof(n));
        KernelChecks.NonNegative(k, nameof(k));
        CheckLeading(lda, transA ? m : k, nameof(lda));
        CheckLeading(ldb, transB ? k : n, nameof(ldb));
        CheckLeading(ldc, n, nameof(ldc));
        KernelChecks.Length(aLength, ExtentA(transA, m, k, lda), "a");
        KernelChecks.Length(bLength, ExtentB(transB, n, k, ldb), "b");
        KernelChecks.Length(cLength, KernelChecks.MatrixExtent(m, n, ldc), "c");
    }

    internal static void CheckBatched(bool transA, bool transB, int m, int n, int k, int aLength, int lda, int bLength, int ldb,
        int cLength, int ldc, int batch, long strideA, long strideB, long strideC)
    {
        KernelChecks.NonNegative(batch, nameof(batch));
        CheckGemm(transA, transB, m, n, k, int.MaxValue, lda, int.MaxValue, ldb, int.MaxValue, ldc);
        if (strideA < 0 || strideB < 0 || strideC < 0) throw new ArgumentOutOfRangeException(nameof(strideA), "batch strides must not be negative");
        long extentC = KernelChecks.MatrixExtent(m, n, ldc);
        if (batch > 1 && extentC > 0 && strideC < extentC)
            throw new ArgumentException($"strideC {strideC} makes the {batch} output matrices overlap (each spans {extentC} elements)", nameof(strideC));
        if (batch == 0) return;
        KernelChecks.Length(aLength, BatchExtent(batch, strideA, ExtentA(transA, m, k, lda)), "a");
        KernelChecks.Length(bLength, BatchExtent(batch, strideB, ExtentB(transB, n, k, ldb)), "b");
        KernelChecks.Length(cLength, BatchExtent(batch, strideC, extentC), "c");
    }

    private static long BatchExtent(int batch, long stride, long extent) => extent == 0 ? 0 : (batch - 1) * stride + extent;

    private static void CheckLeading(int ld, int minimum, string name)
    {
        if (ld < Math.Max(1, minimum)) throw new ArgumentOutOfRangeException(name, ld, $"{name} must be at least {Math.Max(1, minimum)}");
    }
}
