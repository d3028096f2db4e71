// The device-resident training update: gradient accumulation over micro-steps, global-norm clipping with a NaN/Inf
// flag, multi-tensor AdamW and SGD, fp16's dynamic loss scale, and the update's report -- all reading their per-update
// scalars from device memory, so one captured graph replays every update.
//
// UpdateState (one per run, in device memory; the host reads it back, 48 bytes, once per update):
//   loss        sum over micro-steps of loss / micro_steps           grad_norm, clip_coef   of the accumulated gradient
//   nonfinite   a gradient was NaN/Inf: the update kernels change nothing (the step is skipped)
//   loss_scale  fp16's dynamic loss scale S (1 otherwise)   grad_scale  1 / (micro_steps * S), applied while accumulating
//   good_steps, skipped   GradScaler's growth tracker and skipped-update count   error_flag  first failed index check
//
// A parameter group is a device array of slots; the multi-tensor kernels run over grid (chunks, count): blockIdx.y picks
// the tensor, blockIdx.x a chunk of `chunk` elements; block 256.
//   update_begin(UpdateState* s, float inv_micro_steps)                              grid 1, block 32
//       loss = nonfinite = error_flag = 0; grad_scale = inv_micro_steps / loss_scale
//   loss_accumulate(UpdateState* s, const float* loss, float inv_micro_steps)        grid 1, block 32
//   grad_accumulate(const AccumulateSlot* slots, int count, i64 chunk, const UpdateState* s, int first)
//       acc = (first ? 0 : acc) + grad * grad_scale  (the mean of the micro-steps' unscaled gradients)
//   error_flags_first(const int* flags, int n, int tag, UpdateState* s)               grid 1, block 256
//       error_flag = tag + (index of the first set flag) + 1, unless an earlier call already set it
//   grad_norm_partial(const ParamSlot* slots, int count, i64 chunk, float* partials, int chunks, int* nonfinite)
//       partials[t*chunks + c] = sum of grad^2 over that chunk; *nonfinite = 1 if any grad is NaN/Inf
//   grad_norm_finalize(const float* partials, int n, float max_norm, float grad_scale, float* clip_state)
//       grid (1), block 256: clip_state[0] = ||g|| (times grad_scale), clip_state[1] = min(1, max_norm/(||g||+1e-6))
//       (max_norm <= 0: no clipping, coefficient 1) -- torch.nn.utils.clip_grad_norm_
//   adamw_update(const ParamSlot* slots, int count, i64 chunk, const AdamWConfig* cfg, const float* clip_state, const int* nonfinite)
//       torch.optim.AdamW (decoupled weight decay, bias-corrected, eps outside the sqrt)
//   sgd_update(const ParamSlot* slots, int count, i64 chunk, const SgdConfig* cfg, const float* clip_state, const int* nonfinite)
//       torch.optim.SGD (L2 weight decay into the gradient, momentum buffer in slot.m, keep = 1 - dampening, nesterov)
//   ema_update(const EmaSlot* slots, int count, i64 chunk, const float* one_minus_decay, const int* nonfinite)
//       diffusers' EMAModel.step: shadow -= (1 - decay) * (shadow - param), after an applied update
//   loss_scale_update(UpdateState* s, int growth_interval, float growth, float backoff) grid 1, block 32
//       torch.cuda.amp.GradScaler.update: overflow halves S and resets the tracker; growth_interval good updates double it
// clip_state and nonfinite may be null. g = grad * cfg.grad_scale * clip coefficient.
#include "device.cuh"

struct ParamSlot
{
    float* param;
    const float* grad;
    float* m; // AdamW first moment / SGD momentum buffer
    float* v; // AdamW second moment
    i64 n;
};

struct AccumulateSlot
{
    float* acc;
    const float* grad;
    i64 n;
};

struct EmaSlot
{
    float* shadow;
    const float* param;
    i64 n;
};

struct UpdateState
{
    float loss, grad_norm, clip_coef;
    int nonfinite;
    float loss_scale, grad_scale;
    int good_steps, skipped, error_flag, pad_[3];
};

// The scalars of one update, computed on the host in float64 and rounded (AdamWScalars), so the device follows the
// CPU optimizer's operation order exactly.
struct AdamWConfig
{
    float decay_factor, beta1, one_minus_beta1, beta2, one_minus_beta2, step_size, bias_correction2_sqrt, eps, grad_scale;
    int pad_[3];
};
struct SgdConfig { float lr, momentum, keep, weight_decay, grad_scale; int nesterov, first_step, pad_; };

__global__ void update_begin(UpdateState* s, float inv_micro_steps)
{
    if (threadIdx.x != 0) return;
    s->loss = 0.0f;
    s->nonfinite = 0;
    s->error_flag = 0;
    s->grad_scale = inv_micro_steps / s->loss_scale;
}

__global__ void loss_accumulate(UpdateState* s, const float* loss, float inv_micro_steps)
{
    if (threadIdx.x == 0) s->loss += *loss * inv_micro_steps;
}

__global__ void grad_accumulate(const AccumulateSlot* __restrict__ slots, int count, i64 chunk, const UpdateState* __restrict__ s, int first)
{
    const AccumulateSlot a = slots[blockIdx.y];
    const float k = s->grad_scale;
    const i64 begin = (i64)blockIdx.x * chunk, end = min(a.n, begin + chunk);
    for (i64 i = begin + threadIdx.x; i < end; i += blockDim.x)
        a.acc[i] = first ? a.grad[i] * k : a.acc[i] + a.grad[i] * k;
}

__global__ void error_flags_first(const int* __restrict__ flags, int n, int tag, UpdateState* s)
{
    CD_SHARED(float, scratch, 32);
    // The first set flag as the largest of n - index (exact in fp32 for n <= 2^24).
    float best = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        if (flags[i] != 0) best = fmaxf(best, (float)(n - i));
    best = block_max(best, scratch);
    if (threadIdx.x == 0 && best > 0.0f && s->error_flag == 0) s->error_flag = tag + (n - (int)best) + 1;
}

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

__global__ void adamw_update(const ParamSlot* __restrict__ slots, int count, i64 chunk, const AdamWConfig* __restrict__ config,
                             const float* __restrict__ clip_state, const int* __restrict__ nonfinite)
{
    if (nonfinite && *nonfinite) return;
    const AdamWConfig cfg = *config;
    const ParamSlot s = slots[blockIdx.y];
    const float k = cfg.grad_scale * clip_coefficient(clip_state);
    const i64 begin = (i64)blockIdx.x * chunk, end = min(s.n, begin + chunk);
    for (i64 i = begin + threadIdx.x; i < end; i += blockDim.x)
    {
        const float g = s.grad[i] * k;
        const float p = s.param[i] * cfg.decay_factor;
        const float m = s.m[i] * cfg.beta1 + cfg.one_minus_beta1 * g;
        const float v = s.v[i] * cfg.beta2 + cfg.one_minus_beta2 * g * g;
        const float denom = sqrtf(v) / cfg.bias_correction2_sqrt + cfg.eps;
        s.m[i] = m;
        s.v[i] = v;
        s.param[i] = p + -cfg.step_size * m / denom;
    }
}

__global__ void sgd_update(const ParamSlot* __restrict__ slots, int count, i64 chunk, const SgdConfig* __restrict__ config,
                           const float* __restrict__ clip_state, const int* __restrict__ nonfinite)
{
    if (nonfinite && *nonfinite) return;
    const SgdConfig cfg = *config;
    const ParamSlot s = slots[blockIdx.y];
    const float k = cfg.grad_scale * clip_coefficient(clip_state);
    const i64 begin = (i64)blockIdx.x * chunk, end = min(s.n, begin + chunk);
    for (i64 i = begin + threadIdx.x; i < end; i += blockDim.x)
    {
        const float g = s.grad[i] * k;
        float d = cfg.weight_decay != 0.0f ? g + cfg.weight_decay * s.param[i] : g;
        if (cfg.momentum != 0.0f)
        {
            const float b = cfg.first_step ? d : s.m[i] * cfg.momentum + cfg.keep * d;
            s.m[i] = b;
            d = cfg.nesterov ? d + cfg.momentum * b : b;
        }
        s.param[i] = s.param[i] + -cfg.lr * d;
    }
}

__global__ void ema_update(const EmaSlot* __restrict__ slots, int count, i64 chunk, const float* __restrict__ one_minus_decay,
                           const int* __restrict__ nonfinite)
{
    if (nonfinite && *nonfinite) return;
    const EmaSlot e = slots[blockIdx.y];
    const float k = *one_minus_decay;
    const i64 begin = (i64)blockIdx.x * chunk, end = min(e.n, begin + chunk);
    for (i64 i = begin + threadIdx.x; i < end; i += blockDim.x) e.shadow[i] -= k * (e.shadow[i] - e.param[i]);
}

__global__ void loss_scale_update(UpdateState* s, int growth_interval, float growth, float backoff)
{
    if (threadIdx.x != 0) return;
    if (s->nonfinite)
    {
        s->loss_scale *= backoff;
        s->good_steps = 0;
        s->skipped += 1;
    }
    else if (++s->good_steps >= growth_interval)
    {
        s->loss_scale *= growth;
        s->good_steps = 0;
    }
}

CD_EXPORT(update_begin, update_begin)
CD_EXPORT(loss_accumulate, loss_accumulate)
CD_EXPORT(grad_accumulate, grad_accumulate)
CD_EXPORT(error_flags_first, error_flags_first)
CD_EXPORT(grad_norm_partial, grad_norm_partial)
CD_EXPORT(grad_norm_finalize, grad_norm_finalize)
CD_EXPORT(adamw_update, adamw_update)
CD_EXPORT(sgd_update, sgd_update)
CD_EXPORT(ema_update, ema_update)
CD_EXPORT(loss_scale_update, loss_scale_update)
