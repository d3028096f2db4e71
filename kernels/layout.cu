// Data movement of any element type (bytes 1, 2, 4, 8): one strided copy serves Transpose, Slice,
// Split, Concat, Expand, Tile, Pad and materialised views; a pattern fill serves Pad's border,
// ConstantOfShape and masks. No arithmetic, so the element type is only its width.
//
// Launcher contract (KernelLaunchers.StridedCopy/FillPattern): 1-D grid-stride, block 256, no shared memory.
//   strided_copy_<e>(const E* src, E* dst, CopyGeometry g, i64 n)
//       for every index idx of g.shape (n elements, row-major):
//       dst[sum(idx_d * g.dst_stride[d])] = src[sum(idx_d * g.src_stride[d])]
//       (strides in elements, 0 to broadcast; the host merges dimensions first, rank <= 8)
//   fill_pattern_<e>(E* dst, i64 n, E value)                  dst[0..n) = value
#include "device.cuh"

#define CD_COPY_RANK 8

struct CopyGeometry
{
    int rank;
    int shape[CD_COPY_RANK];
    i64 src_stride[CD_COPY_RANK];
    i64 dst_stride[CD_COPY_RANK];
};

template <class E>
__global__ void strided_copy(const E* __restrict__ src, E* __restrict__ dst, CopyGeometry g, i64 n)
{
    for (i64 i = global_thread_index(); i < n; i += global_thread_count())
    {
        i64 rest = i, s = 0, d = 0;
        for (int k = g.rank - 1; k >= 0; k--)
        {
            const i64 c = rest % g.shape[k];
            rest /= g.shape[k];
            s += c * g.src_stride[k];
            d += c * g.dst_stride[k];
        }
        dst[d] = src[s];
    }
}

template <class E>
__global__ void fill_pattern(E* __restrict__ dst, i64 n, E value)
{
    for (i64 i = global_thread_index(); i < n; i += global_thread_count()) dst[i] = value;
}

CD_EXPORT(strided_copy_1, strided_copy<u8>)
CD_EXPORT(strided_copy_2, strided_copy<u16>)
CD_EXPORT(strided_copy_4, strided_copy<u32>)
CD_EXPORT(strided_copy_8, strided_copy<u64>)
CD_EXPORT(fill_pattern_1, fill_pattern<u8>)
CD_EXPORT(fill_pattern_2, fill_pattern<u16>)
CD_EXPORT(fill_pattern_4, fill_pattern<u32>)
CD_EXPORT(fill_pattern_8, fill_pattern<u64>)
