// Softmax over the last axis of a [rows, cols] tensor, forward and backward.
//
// Launcher contract (KernelLaunchers.Softmax*): grid (rows), block (256), no dynamic shared memory.
//   softmax_forward_<t>(const T* x, T* y, int rows, int cols)
//       y = exp(x - max) / sum exp(x - max), fp32 statistics.
//   softmax_backward_<t>(const T* dy, const T* y, T* dx, int rows, int cols)
//       dx = y * (dy - sum(dy * y)).
#include "device.cuh"

template <class T>
__global__ void softmax_forward(const T* __restrict__ x, T* __restrict__ y, int rows, int cols)
{
    CD_SHARED(float, scratch, 32);
    const i64 row = blockIdx.x;
    const T* xr = x + row * cols;
    T* yr = y + row * cols;
    float m = -3.402823466e38f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) m = fmaxf(m, to_f32(xr[c]));
    m = block_max(m, scratch);
    float s = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) s += expf(to_f32(xr[c]) - m);
    s = block_sum(s, scratch);
    const float inv = 1.0f / s;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) yr[c] = from_f32<T>(expf(to_f32(xr[c]) - m) * inv);
}

template <class T>
__global__ void softmax_backward(const T* __restrict__ dy, const T* __restrict__ y, T* __restrict__ dx, int rows, int cols)
{
    CD_SHARED(float, scratch, 32);
    const i64 row = blockIdx.x;
    const T* dyr = dy + row * cols;
    const T* yr = y + row * cols;
    float dot = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) dot += to_f32(dyr[c]) * to_f32(yr[c]);
    dot = block_sum(dot, scratch);
    for (int c = threadIdx.x; c < cols; c += blockDim.x)
        dx[row * cols + c] = from_f32<T>(to_f32(yr[c]) * (to_f32(dyr[c]) - dot));
}

CD_EXPORT(softmax_forward_f32, softmax_forward<float>)
CD_EXPORT(softmax_backward_f32, softmax_backward<float>)
CD_EXPORT(softmax_forward_bf16, softmax_forward<bf16_t>)
CD_EXPORT(softmax_forward_f16, softmax_forward<half_t>)
CD_EXPORT(softmax_backward_bf16, softmax_backward<bf16_t>)
CD_EXPORT(softmax_backward_f16, softmax_backward<half_t>)
