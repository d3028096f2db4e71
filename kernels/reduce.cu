// Reductions: over one axis of a tensor viewed as [outer, len, inner] (sum, mean, max, min, sum of
// squares), over any set of axes (ONNX Reduce* with scattered axes, and SumTo: the backward of a
// broadcast), and ArgMax/ArgMin.
//
// Launcher contract (KernelLaunchers.Reduce/ReduceAxes/ArgReduce):
//   reduce_rows_<t>(int op, const T* x, T* y, i64 outer, int len, i64 inner)     inner == 1
//       grid (outer), block B (a multiple of 32, <= 256) -- one block per output, tree reduction in fp32.
//   reduce_strided_<t>(same arguments)                                            inner > 1
//       1-D grid-stride, block 256 -- one thread per output, serial over len.
//   reduce_axes_serial_<t>(int op, const T* x, T* y, ReduceGeometry g, i64 outputs)
//       1-D grid-stride, block 256 -- one thread per output, serial over the g.count reduced elements.
//   reduce_axes_block_<t>(int op, const T* x, T* y, ReduceGeometry g, i64 outputs)
//       grid (outputs), block 256 -- one block per output.
//       ReduceGeometry: output element o sits at x offset sum(idx_d(o) * out_stride[d]) over out_shape;
//       the reduced elements add sum(idx_d(r) * red_stride[d]) over red_shape (ranks <= 6).
//   arg_reduce_<t>(int is_max, int last, const T* x, i64* y, i64 outer, int len, i64 inner)
//       1-D grid-stride, block 256: the index along len of the first (last: the last) extremum.
//   op: 0 sum, 1 mean, 2 max, 3 sum of squares, 4 min. Accumulation is fp32.
#include "device.cuh"

enum ReduceKind { R_SUM = 0, R_MEAN, R_MAX, R_SUMSQ, R_MIN };

CD_DEVICE float reduce_init(int op) { return op == R_MAX ? -3.402823466e38f : (op == R_MIN ? 3.402823466e38f : 0.0f); }
CD_DEVICE float reduce_step(int op, float acc, float v)
{
    switch (op)
    {
    case R_MAX: return v != v || acc != acc ? v + acc : fmaxf(acc, v); // NaN propagates
    case R_MIN: return v != v || acc != acc ? v + acc : fminf(acc, v);
    case R_SUMSQ: return acc + v * v;
    default: return acc + v;
    }
}

template <class T>
__global__ void reduce_rows(int op, const T* __restrict__ x, T* __restrict__ y, i64 outer, int len, i64 inner)
{
    CD_SHARED(float, scratch, 32);
    const T* row = x + (i64)blockIdx.x * len;
    float acc = reduce_init(op);
    for (int i = threadIdx.x; i < len; i += blockDim.x) acc = reduce_step(op, acc, to_f32(row[i]));
    acc = op == R_MAX ? block_max(acc, scratch) : op == R_MIN ? -block_max(-acc, scratch) : block_sum(acc, scratch);
    if (threadIdx.x == 0) y[blockIdx.x] = from_f32<T>(op == R_MEAN ? acc / (float)len : acc);
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
        y[o] = from_f32<T>(op == R_MEAN ? acc / (float)len : acc);
    }
}

struct ReduceGeometry
{
    int out_rank, red_rank;
    int out_shape[CD_MAX_RANK];
    int red_shape[CD_MAX_RANK];
    i64 out_stride[CD_MAX_RANK];
    i64 red_stride[CD_MAX_RANK];
    i64 count; // reduced elements per output
};

CD_DEVICE i64 geometry_offset(i64 linear, int rank, const int* shape, const i64* stride)
{
    i64 off = 0;
    for (int d = rank - 1; d >= 0; d--)
    {
        off += (linear % shape[d]) * stride[d];
        linear /= shape[d];
    }
    return off;
}

CD_DEVICE float reduce_finish(int op, float acc, i64 count) { return op == R_MEAN ? acc / (float)count : acc; }

template <class T>
__global__ void reduce_axes_serial(int op, const T* __restrict__ x, T* __restrict__ y, ReduceGeometry g, i64 outputs)
{
    for (i64 o = global_thread_index(); o < outputs; o += global_thread_count())
    {
        const T* base = x + geometry_offset(o, g.out_rank, g.out_shape, g.out_stride);
        float acc = reduce_init(op);
        for (i64 r = 0; r < g.count; r++) acc = reduce_step(op, acc, to_f32(base[geometry_offset(r, g.red_rank, g.red_shape, g.red_stride)]));
        y[o] = from_f32<T>(reduce_finish(op, acc, g.count));
    }
}

template <class T>
__global__ void reduce_axes_block(int op, const T* __restrict__ x, T* __restrict__ y, ReduceGeometry g, i64 outputs)
{
    CD_SHARED(float, scratch, 32);
    const T* base = x + geometry_offset(blockIdx.x, g.out_rank, g.out_shape, g.out_stride);
    float acc = reduce_init(op);
    for (i64 r = threadIdx.x; r < g.count; r += blockDim.x)
        acc = reduce_step(op, acc, to_f32(base[geometry_offset(r, g.red_rank, g.red_shape, g.red_stride)]));
    acc = op == R_MAX ? block_max(acc, scratch) : op == R_MIN ? -block_max(-acc, scratch) : block_sum(acc, scratch);
    if (threadIdx.x == 0) y[blockIdx.x] = from_f32<T>(reduce_finish(op, acc, g.count));
}

template <class T>
__global__ void arg_reduce(int is_max, int last, const T* __restrict__ x, i64* __restrict__ y, i64 outer, int len, i64 inner)
{
    const i64 n = outer * inner;
    for (i64 o = global_thread_index(); o < n; o += global_thread_count())
    {
        const i64 a = o / inner, b = o - a * inner;
        const T* p = x + a * len * inner + b;
        T best = p[0];
        i64 at = 0;
        for (int i = 1; i < len; i++)
        {
            const T v = p[(i64)i * inner];
            const bool better = is_max ? (last ? v >= best : v > best) : (last ? v <= best : v < best);
            if (better) { best = v; at = i; }
        }
        y[o] = at;
    }
}

CD_EXPORT(reduce_rows_f32, reduce_rows<float>)
CD_EXPORT(reduce_strided_f32, reduce_strided<float>)
CD_EXPORT(reduce_axes_serial_f32, reduce_axes_serial<float>)
CD_EXPORT(reduce_axes_block_f32, reduce_axes_block<float>)
CD_EXPORT(arg_reduce_f32, arg_reduce<float>)
CD_EXPORT(arg_reduce_i32, arg_reduce<int>)
CD_EXPORT(arg_reduce_i64, arg_reduce<i64>)
CD_EXPORT(reduce_rows_bf16, reduce_rows<bf16_t>)
CD_EXPORT(reduce_rows_f16, reduce_rows<half_t>)
CD_EXPORT(reduce_strided_bf16, reduce_strided<bf16_t>)
CD_EXPORT(reduce_strided_f16, reduce_strided<half_t>)
CD_EXPORT(reduce_axes_serial_bf16, reduce_axes_serial<bf16_t>)
CD_EXPORT(reduce_axes_serial_f16, reduce_axes_serial<half_t>)
CD_EXPORT(reduce_axes_block_bf16, reduce_axes_block<bf16_t>)
CD_EXPORT(reduce_axes_block_f16, reduce_axes_block<half_t>)
