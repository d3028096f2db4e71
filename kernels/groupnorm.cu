// GroupNorm (+ optional fused SiLU), forward and backward. x is [N, C, S] (S = H*W), G groups.
//
// Launcher contract (KernelLaunchers.GroupNorm*): block 256, no dynamic shared memory.
//   groupnorm_forward_<t>(const T* x, const float* gamma, const float* beta, T* y, float* mean,
//                         float* rstd, int N, int C, i64 S, int G, float eps, int silu)      grid (N*G)
//       mean/rstd: [N, G] fp32, saved for the backward. y = silu?(xhat*gamma[c] + beta[c]);
//       gamma and beta may be null (1 and 0).
//   groupnorm_backward_dx_<t>(const T* x, const T* dy, const float* gamma, const float* beta,
//                         const float* mean, const float* rstd, T* dx, int N, int C, i64 S, int G, int silu)
//                                                                                             grid (N*G)
//   groupnorm_backward_affine_<t>(same inputs, float* dgamma, float* dbeta, ...)              grid (C)
//       deterministic per-channel sums over N and S (no atomics).
// Statistics are two-pass (mean, then centred variance) in fp32, as PyTorch's CPU kernel does.
#include "device.cuh"

CD_DEVICE float gn_sigmoid(float z) { return 1.0f / (1.0f + expf(-z)); }
CD_DEVICE float gn_gamma(const float* gamma, int c) { return gamma ? gamma[c] : 1.0f; }
CD_DEVICE float gn_beta(const float* beta, int c) { return beta ? beta[c] : 0.0f; }

template <class T>
__global__ void groupnorm_forward(const T* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ beta,
                                  T* __restrict__ y, float* __restrict__ mean_out, float* __restrict__ rstd_out,
                                  int N, int C, i64 S, int G, float eps, int silu)
{
    CD_SHARED(float, scratch, 32);
    const int ng = blockIdx.x, n = ng / G, g = ng - n * G, cpg = C / G;
    const i64 count = (i64)cpg * S;
    const i64 base = ((i64)n * C + (i64)g * cpg) * S;
    float s = 0.0f;
    for (i64 i = threadIdx.x; i < count; i += blockDim.x) s += to_f32(x[base + i]);
    const float mean = block_sum(s, scratch) / (float)count;
    float v = 0.0f;
    for (i64 i = threadIdx.x; i < count; i += blockDim.x) { float d = to_f32(x[base + i]) - mean; v += d * d; }
    const float rstd = rsqrtf(block_sum(v, scratch) / (float)count + eps);
    for (i64 i = threadIdx.x; i < count; i += blockDim.x)
    {
        const int c = g * cpg + (int)(i / S);
        float z = (to_f32(x[base + i]) - mean) * rstd * gn_gamma(gamma, c) + gn_beta(beta, c);
        if (silu) z = z * gn_sigmoid(z);
        y[base + i] = from_f32<T>(z);
    }
    if (threadIdx.x == 0) { mean_out[ng] = mean; rstd_out[ng] = rstd; }
}

// dz: the gradient at the affine output (before the fused SiLU).
template <class T>
CD_DEVICE float gn_dz(const T* x, const T* dy, const float* gamma, const float* beta, i64 idx, int c, float mean, float rstd, int silu)
{
    float d = to_f32(dy[idx]);
    if (silu)
    {
        const float z = (to_f32(x[idx]) - mean) * rstd * gn_gamma(gamma, c) + gn_beta(beta, c);
        const float sg = gn_sigmoid(z);
        d *= sg * (1.0f + z * (1.0f - sg));
    }
    return d;
}

template <class T>
__global__ void groupnorm_backward_dx(const T* __restrict__ x, const T* __restrict__ dy, const float* __restrict__ gamma,
                                      const float* __restrict__ beta, const float* __restrict__ mean_in,
                                      const float* __restrict__ rstd_in, T* __restrict__ dx, int N, int C, i64 S, int G, int silu)
{
    CD_SHARED(float, scratch, 32);
    const int ng = blockIdx.x, n = ng / G, g = ng - n * G, cpg = C / G;
    const i64 count = (i64)cpg * S;
    const i64 base = ((i64)n * C + (i64)g * cpg) * S;
    const float mean = mean_in[ng], rstd = rstd_in[ng];
    // dxhat = dz * gamma; dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
    float s1 = 0.0f, s2 = 0.0f;
    for (i64 i = threadIdx.x; i < count; i += blockDim.x)
    {
        const int c = g * cpg + (int)(i / S);
        const float dxhat = gn_dz(x, dy, gamma, beta, base + i, c, mean, rstd, silu) * gn_gamma(gamma, c);
        const float xhat = (to_f32(x[base + i]) - mean) * rstd;
        s1 += dxhat;
        s2 += dxhat * xhat;
    }
    const float m1 = block_sum(s1, scratch) / (float)count;
    const float m2 = block_sum(s2, scratch) / (float)count;
    for (i64 i = threadIdx.x; i < count; i += blockDim.x)
    {
        const int c = g * cpg + (int)(i / S);
        const float dxhat = gn_dz(x, dy, gamma, beta, base + i, c, mean, rstd, silu) * gn_gamma(gamma, c);
        const float xhat = (to_f32(x[base + i]) - mean) * rstd;
        dx[base + i] = from_f32<T>(rstd * (dxhat - m1 - xhat * m2));
    }
}

template <class T>
__global__ void groupnorm_backward_affine(const T* __restrict__ x, const T* __restrict__ dy, const float* __restrict__ gamma,
                                          const float* __restrict__ beta, const float* __restrict__ mean_in,
                                          const float* __restrict__ rstd_in, float* __restrict__ dgamma,
                                          float* __restrict__ dbeta, int N, int C, i64 S, int G, int silu)
{
    CD_SHARED(float, scratch, 32);
    const int c = blockIdx.x, g = c / (C / G);
    float sg = 0.0f, sb = 0.0f;
    for (int n = 0; n < N; n++)
    {
        const float mean = mean_in[n * G + g], rstd = rstd_in[n * G + g];
        const i64 base = ((i64)n * C + c) * S;
        for (i64 i = threadIdx.x; i < S; i += blockDim.x)
        {
            const float dz = gn_dz(x, dy, gamma, beta, base + i, c, mean, rstd, silu);
            sg += dz * (to_f32(x[base + i]) - mean) * rstd;
            sb += dz;
        }
    }
    sg = block_sum(sg, scratch);
    sb = block_sum(sb, scratch);
    if (threadIdx.x == 0)
    {
        if (dgamma) dgamma[c] = sg;
        if (dbeta) dbeta[c] = sb;
    }
}

CD_EXPORT(groupnorm_forward_f32, groupnorm_forward<float>)
CD_EXPORT(groupnorm_backward_dx_f32, groupnorm_backward_dx<float>)
CD_EXPORT(groupnorm_backward_affine_f32, groupnorm_backward_affine<float>)
CD_EXPORT(groupnorm_forward_bf16, groupnorm_forward<bf16_t>)
CD_EXPORT(groupnorm_forward_f16, groupnorm_forward<half_t>)
CD_EXPORT(groupnorm_backward_dx_bf16, groupnorm_backward_dx<bf16_t>)
CD_EXPORT(groupnorm_backward_dx_f16, groupnorm_backward_dx<half_t>)
CD_EXPORT(groupnorm_backward_affine_bf16, groupnorm_backward_affine<bf16_t>)
CD_EXPORT(groupnorm_backward_affine_f16, groupnorm_backward_affine<half_t>)
