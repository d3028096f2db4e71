// Multi-tensor optimizer updates (AdamW, SGD with momentum) with global-norm gradient clipping and a
// NaN/Inf flag, all reading their step state from device memory so a captured graph can replay them.
//
// A parameter group is a device array of ParamSlot. Every kernel runs over grid (chunks, count):
// blockIdx.y picks the tensor, blockIdx.x a chunk of `chunk` elements; block 256.
//   grad_norm_partial(const ParamSlot* slots, int count, i64 chunk, float* partials, int chunks, int* nonfinite)
//       partials[t*chunks + c] = sum of grad^2 over that chunk; *nonfinite = 1 if any grad is NaN/Inf
//   grad_norm_finalize(const float* partials, int n, float max_norm, float grad_scale, float* clip_state)
//       grid (1), block 256: clip_state[0] = ||g|| (times grad_scale), clip_state[1] = min(1, max_norm/(||g||+1e-6))
//       (max_norm <= 0: no clipping, coefficient 1) -- torch.nn.utils.clip_grad_norm_
//   adamw_update(const ParamSlot* slots, int count, i64 chunk, AdamWConfig cfg, const float* clip_state, const int* nonfinite)
//       torch.optim.AdamW (decoupled weight decay, bias-corrected, eps outside the sqrt)
//   sgd_update(const ParamSlot* slots, int count, i64 chunk, SgdConfig cfg, const float* clip_state, const int* nonfinite)
//       torch.optim.SGD (L2 weight decay into the gradient, momentum buffer in slot.m, dampening, nesterov)
// clip_state and nonfinite may be null. When *nonfinite is set the update kernels change nothing
// (the step is skipped, as a dynamic loss scaler does). g = grad * grad_scale * clip coefficient.
#include "device.cuh"

struct ParamSlot
{
    float* param;
    const float* grad;
    float* m; // AdamW first moment / SGD momentum buffer
    float* v; // AdamW second moment
    i64 n;
};

struct AdamWConfig { float lr, beta1, beta2, eps, weight_decay, bias_correction1, bias_correction2, grad_scale; };
struct SgdConfig { float lr, momentum, dampening, weight_decay, grad_scale; int nesterov, first_step, pad_; };

__global__ void grad_norm_partial(const ParamSlot* __restrict__ slots, int count, i64 chunk, float* __restrict__ partials,
                                  int chunks, int* nonfinite)
{
    CD_SHARED(float, scratch, 32);
    const ParamSlot s = slots[blockIdx.y];
    const i64 begin = (i64)blockIdx.x * chunk, end = min(s.n, begin + chunk);
    float acc = 0.0f;
    bool bad = false;
    for (i64 i = begin + threadIdx.x; i < end; i += blockDim.x)
    {
        const float g = s.grad[i];
        bad |= !is_finite(g);
        acc += g * g;
    }
    if (bad && nonfinite) *nonfinite = 1;
    acc = block_sum(acc, scratch);
    if (threadIdx.x == 0) partials[(i64)blockIdx.y * chunks + blockIdx.x] = acc;
}

__global__ void grad_norm_finalize(const float* __restrict__ partials, int n, float max_norm, float grad_scale, float* __restrict__ clip_state)
{
    CD_SHARED(float, scratch, 32);
    float acc = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) acc += partials[i];
    acc = block_sum(acc, scratch);
    if (threadIdx.x == 0)
    {
        const float norm = sqrtf(acc) * grad_scale;
        clip_state[0] = norm;
        clip_state[1] = max_norm > 0.0f ? fminf(1.0f, max_norm / (norm + 1e-6f)) : 1.0f;
    }
}

CD_DEVICE float clip_coefficient(const float* clip_state) { return clip_state ? clip_state[1] : 1.0f; }

__global__ void adamw_update(const ParamSlot* __restrict__ slots, int count, i64 chunk, AdamWConfig cfg,
                             const float* __restrict__ clip_state, const int* __restrict__ nonfinite)
{
    if (nonfinite && *nonfinite) return;
    const ParamSlot s = slots[blockIdx.y];
    const float k = cfg.grad_scale * clip_coefficient(clip_state);
    const float step_size = cfg.lr / cfg.bias_correction1, bc2_sqrt = sqrtf(cfg.bias_correction2);
    const float decay = 1.0f - cfg.lr * cfg.weight_decay;
    const i64 begin = (i64)blockIdx.x * chunk, end = min(s.n, begin + chunk);
    for (i64 i = begin + threadIdx.x; i < end; i += blockDim.x)
    {
        const float g = s.grad[i] * k;
        float p = s.param[i] * decay;
        const float m = cfg.beta1 * s.m[i] + (1.0f - cfg.beta1) * g;
        const float v = cfg.beta2 * s.v[i] + (1.0f - cfg.beta2) * g * g;
        p -= step_size * m / (sqrtf(v) / bc2_sqrt + cfg.eps);
        s.m[i] = m;
        s.v[i] = v;
        s.param[i] = p;
    }
}

__global__ void sgd_update(const ParamSlot* __restrict__ slots, int count, i64 chunk, SgdConfig cfg,
                           const float* __restrict__ clip_state, const int* __restrict__ nonfinite)
{
    if (nonfinite && *nonfinite) return;
    const ParamSlot s = slots[blockIdx.y];
    const float k = cfg.grad_scale * clip_coefficient(clip_state);
    const i64 begin = (i64)blockIdx.x * chunk, end = min(s.n, begin + chunk);
    for (i64 i = begin + threadIdx.x; i < end; i += blockDim.x)
    {
        float g = s.grad[i] * k + cfg.weight_decay * s.param[i];
        if (cfg.momentum != 0.0f)
        {
            const float buf = cfg.first_step ? g : cfg.momentum * s.m[i] + (1.0f - cfg.dampening) * g;
            s.m[i] = buf;
            g = cfg.nesterov ? g + cfg.momentum * buf : buf;
        }
        s.param[i] -= cfg.lr * g;
    }
}

CD_EXPORT(grad_norm_partial, grad_norm_partial)
CD_EXPORT(grad_norm_finalize, grad_norm_finalize)
CD_EXPORT(adamw_update, adamw_update)
CD_EXPORT(sgd_update, sgd_update)
