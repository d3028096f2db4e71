// LayerNorm over the last axis of [rows, D], forward and backward.
//
// Launcher contract (KernelLaunchers.LayerNorm*): block 256, no dynamic shared memory.
//   layernorm_forward_<t>(const T* x, const float* gamma, const float* beta, T* y, float* mean,
//                         float* rstd, i64 rows, int D, float eps)                        grid (rows)
//       gamma/beta may be null (no affine). mean/rstd [rows] fp32 for the backward.
//   layernorm_backward_dx_<t>(const T* x, const T* dy, const float* gamma, const float* mean,
//                         const float* rstd, T* dx, i64 rows, int D)                      grid (rows)
//   layernorm_backward_affine_<t>(const T* x, const T* dy, const float* mean, const float* rstd,
//                         float* dgamma, float* dbeta, i64 rows, int D)        grid (ceil(D/256))
//       one thread per column, serial and deterministic over rows.
#include "device.cuh"

template <class T>
__global__ void layernorm_forward(const T* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ beta,
                                  T* __restrict__ y, float* __restrict__ mean_out, float* __restrict__ rstd_out,
                                  i64 rows, int D, float eps)
{
    CD_SHARED(float, scratch, 32);
    const i64 r = blockIdx.x;
    const T* xr = x + r * D;
    float s = 0.0f;
    for (int i = threadIdx.x; i < D; i += blockDim.x) s += to_f32(xr[i]);
    const float mean = block_sum(s, scratch) / (float)D;
    float v = 0.0f;
    for (int i = threadIdx.x; i < D; i += blockDim.x) { float d = to_f32(xr[i]) - mean; v += d * d; }
    const float rstd = rsqrtf(block_sum(v, scratch) / (float)D + eps);
    for (int i = threadIdx.x; i < D; i += blockDim.x)
    {
        float z = (to_f32(xr[i]) - mean) * rstd;
        if (gamma) z = z * gamma[i];
        if (beta) z = z + beta[i];
        y[r * D + i] = from_f32<T>(z);
    }
    if (threadIdx.x == 0) { mean_out[r] = mean; rstd_out[r] = rstd; }
}

template <class T>
__global__ void layernorm_backward_dx(const T* __restrict__ x, const T* __restrict__ dy, const float* __restrict__ gamma,
                                      const float* __restrict__ mean_in, const float* __restrict__ rstd_in,
                                      T* __restrict__ dx, i64 rows, int D)
{
    CD_SHARED(float, scratch, 32);
    const i64 r = blockIdx.x;
    const float mean = mean_in[r], rstd = rstd_in[r];
    float s1 = 0.0f, s2 = 0.0f;
    for (int i = threadIdx.x; i < D; i += blockDim.x)
    {
        const float dxhat = to_f32(dy[r * D + i]) * (gamma ? gamma[i] : 1.0f);
        s1 += dxhat;
        s2 += dxhat * (to_f32(x[r * D + i]) - mean) * rstd;
    }
    const float m1 = block_sum(s1, scratch) / (float)D;
    const float m2 = block_sum(s2, scratch) / (float)D;
    for (int i = threadIdx.x; i < D; i += blockDim.x)
    {
        const float dxhat = to_f32(dy[r * D + i]) * (gamma ? gamma[i] : 1.0f);
        const float xhat = (to_f32(x[r * D + i]) - mean) * rstd;
        dx[r * D + i] = from_f32<T>(rstd * (dxhat - m1 - xhat * m2));
    }
}

template <class T>
__global__ void layernorm_backward_affine(const T* __restrict__ x, const T* __restrict__ dy, const float* __restrict__ mean_in,
                                          const float* __restrict__ rstd_in, float* __restrict__ dgamma,
                                          float* __restrict__ dbeta, i64 rows, int D)
{
    const int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= D) return;
    float sg = 0.0f, sb = 0.0f;
    for (i64 r = 0; r < rows; r++)
    {
        const float d = to_f32(dy[r * D + col]);
        sg += d * (to_f32(x[r * D + col]) - mean_in[r]) * rstd_in[r];
        sb += d;
    }
    if (dgamma) dgamma[col] = sg;
    if (dbeta) dbeta[col] = sb;
}

CD_EXPORT(layernorm_forward_f32, layernorm_forward<float>)
CD_EXPORT(layernorm_backward_dx_f32, layernorm_backward_dx<float>)
CD_EXPORT(layernorm_backward_affine_f32, layernorm_backward_affine<float>)
CD_EXPORT(layernorm_forward_bf16, layernorm_forward<bf16_t>)
CD_EXPORT(layernorm_forward_f16, layernorm_forward<half_t>)
CD_EXPORT(layernorm_backward_dx_bf16, layernorm_backward_dx<bf16_t>)
CD_EXPORT(layernorm_backward_dx_f16, layernorm_backward_dx<half_t>)
CD_EXPORT(layernorm_backward_affine_bf16, layernorm_backward_affine<bf16_t>)
CD_EXPORT(layernorm_backward_affine_f16, layernorm_backward_affine<half_t>)
