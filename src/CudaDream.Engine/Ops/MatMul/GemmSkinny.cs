using System.Buffers;
using System.Numerics.Tensors;
using CudaDream.Engine.Backends.Cpu.Kernels;

namespace CudaDream.Engine.Ops;

/// <summary>
/// C = alpha·AᵀB + beta·C when C is skinny (at most <see cref="MaxNarrow"/> rows or columns) and the depth is long: the
/// weight gradient of a LoRA factor, dW = dYᵀ·X over 4,096 tokens with a rank of 4 on one side. A packed or register-tiled
/// GEMM wastes most of a 6×32 tile there and spends its time packing; here each row r of A and B adds the outer product
/// A[r,:]ᵀ·B[r,:] to C as a handful of vector multiply-adds along the wide side (<see cref="TensorPrimitives"/>: the widest
/// vectors of the machine, AVX-512 to AdvSimd). Rows are summed in fixed chunks whose partial sums are added in chunk
/// order, so the result does not depend on the thread count.
/// </summary>
internal static unsafe class GemmSkinny
{
    /// <summary>Widest narrow side taken (one multiply-add call per narrow index and row).</summary>
    public const int MaxNarrow = 8;

    /// <summary>Rows of A and B per partial sum (the unit of parallel work).</summary>
    private const int ChunkRows = 512;

    /// <summary>Only for transA without transB (the weight-gradient layout), a narrow C and a depth worth the chunking.</summary>
    public static bool Suits(bool transA, bool transB, int m, int n, int k) =>
        transA && !transB && Math.Min(m, n) <= MaxNarrow && Math.Max(m, n) >= 16 && k >= 64;

    /// <summary>A is k×m (lda ≥ m), B is k×n (ldb ≥ n), C is m×n (ldc ≥ n); alpha ≠ 0.</summary>
    public static void Run(int m, int n, int k, float alpha, float* a, int lda, float* b, int ldb, float beta, float* c, int ldc, int degree)
    {
        // The narrow side indexes the accumulators; the wide side is the vector length. Narrow columns (n small):
        // accumulate Cᵀ rows, acc[j, :] += B[r, j]·A[r, :]; narrow rows (m small): acc[i, :] += A[r, i]·B[r, :].
        bool narrowColumns = n <= m;
        int narrow = narrowColumns ? n : m, wide = narrowColumns ? m : n;
        float* vectors = narrowColumns ? a : b, scalars = narrowColumns ? b : a;
        int vectorStride = narrowColumns ? lda : ldb, scalarStride = narrowColumns ? ldb : lda;
        int chunks = (k + ChunkRows - 1) / ChunkRows, accLength = narrow * wide;
        float[] partials = ArrayPool<float>.Shared.Rent(chunks * accLength);
        try
        {
            fixed (float* p = partials)
            {
                nint pBase = (nint)p, vBase = (nint)vectors, sBase = (nint)scalars;
                void Chunk(int chunk)
                {
                    var acc = new Span<float>((float*)pBase + (long)chunk * accLength, accLength);
                    acc.Clear();
                    int r0 = chunk * ChunkRows, r1 = Math.Min(k, r0 + ChunkRows);
                    for (int r = r0; r < r1; r++)
                    {
                        var row = new ReadOnlySpan<float>((float*)vBase + (long)r * vectorStride, wide);
                        float* s = (float*)sBase + (long)r * scalarStride;
                        for (int j = 0; j < narrow; j++)
                        {
                            var target = acc.Slice(j * wide, wide);
                            TensorPrimitives.MultiplyAdd(row, s[j], target, target);
                        }
                    }
                }
                if (degree > 1 && chunks > 1) Parallel.For(0, chunks, CpuKernelOptions.ParallelOptions(degree), Chunk);
                else for (int chunk = 0; chunk < chunks; chunk++) Chunk(chunk);

                var total = new Span<float>(p, accLength);
                for (int chunk = 1; chunk < chunks; chunk++) TensorPrimitives.Add(total, new ReadOnlySpan<float>(p + (long)chunk * accLength, accLength), total);
                for (int i = 0; i < m; i++)
                    for (int j = 0; j < n; j++)
                    {
                        float sum = narrowColumns ? p[(long)j * wide + i] : p[(long)i * wide + j];
                        float* ci = c + (long)i * ldc + j;
                        *ci = beta == 0f ? alpha * sum : alpha * sum + beta * *ci;
                    }
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(partials);
        }
    }
}
