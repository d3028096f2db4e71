// GroupNorm (+ optional fused SiLU), forward and backward. x is [N, C, S] (S = H*W), G groups.
//
// A group of SD 1.5 at batch 1 is one of 32 (N*G blocks would leave most of a 132-SM GPU idle), so every pass is split
// along the group's cpg*S elements into `chunks` slices with a two-stage reduction, and the element-wise parts run over
// the whole tensor. Launcher contract (GroupNormKernels): block 256, no dynamic shared memory; NG = N*G.
//   groupnorm_stats_partial_<t>(const T* x, float* partial, int C, i64 S, int G, int chunks)          grid (chunks, NG)
//       partial[(ng*chunks + k)*3 ..] = (n_k, mean_k, M2_k) of slice k: its own two-pass mean and centred sum of squares
//   groupnorm_stats_finalize(const float* partial, float* mean, float* rstd, int NG, int chunks, float eps)   1-D, 256
//       Chan et al.'s pairwise combination of the slices, in slice order (deterministic): mean/rstd [N, G] fp32
//   groupnorm_apply_<t>(const T* x, const float* gamma, const float* beta, const float* mean, const float* rstd, T* y,
//                       int C, i64 S, int G, int silu, i64 total)                                   1-D grid-stride, 256
//       y = silu?(xhat*gamma[c] + beta[c]); gamma and beta may be null (1 and 0)
//   groupnorm_backward_partial_<t>(x, dy, gamma, beta, mean, rstd, float* partial, int C, i64 S, int G, int silu, int chunks)
//       grid (chunks, NG): partial[(ng*chunks + k)*2 ..] = (sum dxhat, sum dxhat*xhat) over slice k
//   groupnorm_backward_finalize(const float* partial, float* moments, int NG, int chunks, i64 count)        1-D, 256
//       moments[ng*2 ..] = (mean dxhat, mean dxhat*xhat), slices summed in order
//   groupnorm_backward_apply_<t>(x, dy, gamma, beta, mean, rstd, const float* moments, T* dx, int C, i64 S, int G, int silu, i64 total)
//       dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat*xhat))                               1-D grid-stride, 256
//   groupnorm_backward_affine_<t>(x, dy, gamma, beta, mean, rstd, float* dgamma, float* dbeta, int N, int C, i64 S, int G, int silu)
//       grid (C): deterministic per-channel sums over N and S (no atomics); C >= 320 blocks fill the GPU
// Statistics are fp32 (mean, then centred variance within each slice, as PyTorch's CPU kernel does for the whole group).
#include "device.cuh"

CD_DEVICE float gn_sigmoid(float z) { return 1.0f / (1.0f + expf(-z)); }
CD_DEVICE float gn_gamma(const float* gamma, int c) { return gamma ? gamma[c] : 1.0f; }
CD_DEVICE float gn_beta(const float* beta, int c) { return beta ? beta[c] : 0.0f; }

template <class T>
__global__ void groupnorm_stats_partial(const T* __restrict__ x, float* __restrict__ partial, int C, i64 S, int G, int chunks)
{
    CD_SHARED(float, scratch, 32);
    const int ng = blockIdx.y, k = blockIdx.x, n = ng / G, g = ng - n * G, cpg = C / G;
    const i64 count = (i64)cpg * S, per = (count + chunks - 1) / chunks;
    const i64 begin = min(count, (i64)k * per), end = min(count, begin + per);
    const T* xs = x + ((i64)n * C + (i64)g * cpg) * S;
    float s = 0.0f;
    for (i64 i = begin + threadIdx.x; i < end; i += blockDim.x) s += to_f32(xs[i]);
    const float elems = (float)(end - begin);
    s = block_sum(s, scratch);
    const float mean = elems > 0.0f ? s / elems : 0.0f;
    float v = 0.0f;
    for (i64 i = begin + threadIdx.x; i < end; i += blockDim.x) { const float d = to_f32(xs[i]) - mean; v += d * d; }
    v = block_sum(v, scratch);
    if (threadIdx.x == 0)
    {
        float* p = partial + ((i64)ng * chunks + k) * 3;
        p[0] = elems;
        p[1] = mean;
        p[2] = v;
    }
}

__global__ void groupnorm_stats_finalize(const float* __restrict__ partial, float* __restrict__ mean_out, float* __restrict__ rstd_out,
                                         int groups, int chunks, float eps)
{
    for (i64 ng = global_thread_index(); ng < groups; ng += global_thread_count())
    {
        float na = 0.0f, mean = 0.0f, m2 = 0.0f;
        for (int k = 0; k < chunks; k++)
        {
            const float* p = partial + (ng * chunks + k) * 3;
            const float nb = p[0];
            if (nb <= 0.0f) continue;
            const float n = na + nb, delta = p[1] - mean;
            mean += delta * (nb / n);
            m2 += p[2] + delta * delta * (na * nb / n);
            na = n;
        }
        mean_out[ng] = mean;
        rstd_out[ng] = rsqrtf(m2 / na + eps);
    }
}

template <class T>
__global__ void groupnorm_apply(const T* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ beta,
                                const float* __restrict__ mean, const float* __restrict__ rstd, T* __restrict__ y,
                                int C, i64 S, int G, int silu, i64 total)
{
    const int cpg = C / G;
    for (i64 i = global_thread_index(); i < total; i += global_thread_count())
    {
        const i64 nc = i / S;
        const int c = (int)(nc % C);
        const i64 ng = (nc / C) * G + c / cpg;
        float z = (to_f32(x[i]) - mean[ng]) * rstd[ng] * gn_gamma(gamma, c) + gn_beta(beta, c);
        if (silu) z = z * gn_sigmoid(z);
        y[i] = from_f32<T>(z);
    }
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
__global__ void groupnorm_backward_partial(const T* __restrict__ x, const T* __restrict__ dy, const float* __restrict__ gamma,
                                           const float* __restrict__ beta, const float* __restrict__ mean_in,
                                           const float* __restrict__ rstd_in, float* __restrict__ partial, int C, i64 S, int G,
                                           int silu, int chunks)
{
    CD_SHARED(float, scratch, 32);
    const int ng = blockIdx.y, k = blockIdx.x, n = ng / G, g = ng - n * G, cpg = C / G;
    const i64 count = (i64)cpg * S, per = (count + chunks - 1) / chunks;
    const i64 begin = min(count, (i64)k * per), end = min(count, begin + per);
    const i64 base = ((i64)n * C + (i64)g * cpg) * S;
    const float mean = mean_in[ng], rstd = rstd_in[ng];
    float s1 = 0.0f, s2 = 0.0f;
    for (i64 i = begin + threadIdx.x; i < end; i += blockDim.x)
    {
        const int c = g * cpg + (int)(i / S);
        const float dxhat = gn_dz(x, dy, gamma, beta, base + i, c, mean, rstd, silu) * gn_gamma(gamma, c);
        const float xhat = (to_f32(x[base + i]) - mean) * rstd;
        s1 += dxhat;
        s2 += dxhat * xhat;
    }
    s1 = block_sum(s1, scratch);
    s2 = block_sum(s2, scratch);
    if (threadIdx.x == 0)
    {
        float* p = partial + ((i64)ng * chunks + k) * 2;
        p[0] = s1;
        p[1] = s2;
    }
}

__global__ void groupnorm_backward_finalize(const float* __restrict__ partial, float* __restrict__ moments, int groups, int chunks, i64 count)
{
    for (i64 ng = global_thread_index(); ng < groups; ng += global_thread_count())
    {
        float s1 = 0.0f, s2 = 0.0f;
        for (int k = 0; k < chunks; k++)
        {
            s1 += partial[(ng * chunks + k) * 2];
            s2 += partial[(ng * chunks + k) * 2 + 1];
        }
        moments[ng * 2] = s1 / (float)count;
        moments[ng * 2 + 1] = s2 / (float)count;
    }
}

template <class T>
__global__ void groupnorm_backward_apply(const T* __restrict__ x, const T* __restrict__ dy, const float* __restrict__ gamma,
                                         const float* __restrict__ beta, const float* __restrict__ mean_in,
                                         const float* __restrict__ rstd_in, const float* __restrict__ moments, T* __restrict__ dx,
                                         int C, i64 S, int G, int silu, i64 total)
{
    const int cpg = C / G;
    for (i64 i = global_thread_index(); i < total; i += global_thread_count())
    {
        const i64 nc = i / S;
        const int c = (int)(nc % C);
        const i64 ng = (nc / C) * G + c / cpg;
        const float mean = mean_in[ng], rstd = rstd_in[ng];
        const float dxhat = gn_dz(x, dy, gamma, beta, i, c, mean, rstd, silu) * gn_gamma(gamma, c);
        const float xhat = (to_f32(x[i]) - mean) * rstd;
        dx[i] = from_f32<T>(rstd * (dxhat - moments[ng * 2] - xhat * moments[ng * 2 + 1]));
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

CD_EXPORT(groupnorm_stats_finalize, groupnorm_stats_finalize)
CD_EXPORT(groupnorm_backward_finalize, groupnorm_backward_finalize)
CD_EXPORT(groupnorm_stats_partial_f32, groupnorm_stats_partial<float>)
CD_EXPORT(groupnorm_stats_partial_bf16, groupnorm_stats_partial<bf16_t>)
CD_EXPORT(groupnorm_stats_partial_f16, groupnorm_stats_partial<half_t>)
CD_EXPORT(groupnorm_apply_f32, groupnorm_apply<float>)
CD_EXPORT(groupnorm_apply_bf16, groupnorm_apply<bf16_t>)
CD_EXPORT(groupnorm_apply_f16, groupnorm_apply<half_t>)
CD_EXPORT(groupnorm_backward_partial_f32, groupnorm_backward_partial<float>)
CD_EXPORT(groupnorm_backward_partial_bf16, groupnorm_backward_partial<bf16_t>)
CD_EXPORT(groupnorm_backward_partial_f16, groupnorm_backward_partial<half_t>)
CD_EXPORT(groupnorm_backward_apply_f32, groupnorm_backward_apply<float>)
CD_EXPORT(groupnorm_backward_apply_bf16, groupnorm_backward_apply<bf16_t>)
CD_EXPORT(groupnorm_backward_apply_f16, groupnorm_backward_apply<half_t>)
CD_EXPORT(groupnorm_backward_affine_f32, groupnorm_backward_affine<float>)
CD_EXPORT(groupnorm_backward_affine_bf16, groupnorm_backward_affine<bf16_t>)
CD_EXPORT(groupnorm_backward_affine_f16, groupnorm_backward_affine<half_t>)
