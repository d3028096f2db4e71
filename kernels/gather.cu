// Gather along one axis of x viewed as [outer, len, inner] with an index vector (ONNX Gather;
// token and position embeddings), forward and backward. Negative indices count from the end;
// an index outside [-len, len) writes 0 and sets *bad_index to 1 instead of reading out of bounds.
//
// Launcher contract (KernelLaunchers.Gather*): 1-D grid-stride, block 256.
//   gather_forward_<t>_<i>(const T* x, const I* idx, T* y, i64 outer, int len, i64 inner, i64 count, int* bad_index)
//       y is [outer, count, inner]
//   gather_backward_<t>_<i>(const T* dy, const I* idx, float* dx, i64 outer, int len, i64 inner, i64 count)
//       dx (fp32, zeroed by the caller) += dy scattered with atomicAdd
#include "device.cuh"

template <class I> CD_DEVICE i64 gather_index(const I* idx, i64 k, int len)
{
    i64 v = (i64)idx[k];
    return v < 0 ? v + len : v;
}

template <class T, class I>
__global__ void gather_forward(const T* __restrict__ x, const I* __restrict__ idx, T* __restrict__ y, i64 outer, int len,
                               i64 inner, i64 count, int* bad_index)
{
    const i64 n = outer * count * inner;
    for (i64 o = global_thread_index(); o < n; o += global_thread_count())
    {
        const i64 in = o % inner, k = (o / inner) % count, a = o / (inner * count);
        const i64 j = gather_index(idx, k, len);
        if (j < 0 || j >= len) { y[o] = from_f32<T>(0.0f); *bad_index = 1; continue; }
        y[o] = x[(a * len + j) * inner + in];
    }
}

template <class T, class I>
__global__ void gather_backward(const T* __restrict__ dy, const I* __restrict__ idx, float* __restrict__ dx, i64 outer, int len,
                                i64 inner, i64 count)
{
    const i64 n = outer * count * inner;
    for (i64 o = global_thread_index(); o < n; o += global_thread_count())
    {
        const i64 in = o % inner, k = (o / inner) % count, a = o / (inner * count);
        const i64 j = gather_index(idx, k, len);
        if (j < 0 || j >= len) continue;
        atomicAdd(&dx[(a * len + j) * inner + in], to_f32(dy[o]));
    }
}

CD_EXPORT(gather_forward_f32_i32, gather_forward<float, int>)
CD_EXPORT(gather_forward_f32_i64, gather_forward<float, i64>)
CD_EXPORT(gather_backward_f32_i32, gather_backward<float, int>)
CD_EXPORT(gather_backward_f32_i64, gather_backward<float, i64>)
