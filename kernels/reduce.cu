// Reductions over one axis of a tensor viewed as [outer, len, inner]: sum, mean, max, sum of squares.
// Also the backward of a broadcast (sum of dy over the broadcast axes) is this kernel, applied per axis.
//
// Launcher contract (KernelLaunchers.Reduce):
//   reduce_axis_<t>(int op, const T* x, T* y, i64 outer, int len, i64 inner)   y is [outer, inner]
//     inner == 1: grid (outer), block 256 -- one block per output, tree reduction in fp32.
//     inner  > 1: grid (ceil(outer*inner/256)), block 256 -- one thread per output, serial over len.
//   op: 0 sum, 1 mean, 2 max, 3 sum of squares.
#include "device.cuh"

CD_DEVICE float reduce_init(int op) { return op == 2 ? -3.402823466e38f : 0.0f; }
CD_DEVICE float reduce_step(int op, float acc, float v)
{
    return op == 2 ? fmaxf(acc, v) : (op == 3 ? acc + v * v : acc + v);
}

template <class T>
__global__ void reduce_rows(int op, const T* __restrict__ x, T* __restrict__ y, i64 outer, int len, i64 inner)
{
    CD_SHARED(float, scratch, 32);
    const T* row = x + (i64)blockIdx.x * len;
    float acc = reduce_init(op);
    for (int i = threadIdx.x; i < len; i += blockDim.x) acc = reduce_step(op, acc, to_f32(row[i]));
    acc = op == 2 ? block_max(acc, scratch) : block_sum(acc, scratch);
    if (threadIdx.x == 0) y[blockIdx.x] = from_f32<T>(op == 1 ? acc / (float)len : acc);
}

template <class T>
__global__ void reduce_strided(int op, const T* __restrict__ x, T* __restrict__ y, i64 outer, int len, i64 inner)
{
    const i64 n = outer * inner;
    for (i64 o = global_thread_index(); o < n; o += global_thread_count())
    {
        const i64 a = o / inner, b = o - a * inner;
        const T* p = x + a * len * inner + b;
        float acc = reduce_init(op);
        for (int i = 0; i < len; i++) acc = reduce_step(op, acc, to_f32(p[(i64)i * inner]));
        y[o] = from_f32<T>(op == 1 ? acc / (float)len : acc);
    }
}

CD_EXPORT(reduce_rows_f32, reduce_rows<float>)
CD_EXPORT(reduce_strided_f32, reduce_strided<float>)
