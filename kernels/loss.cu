// Losses: mean squared error (the DreamBooth/diffusion objective), forward and backward.
//
// Launcher contract (KernelLaunchers.MseLoss*):
//   mse_loss_forward_<t>(const T* pred, const T* target, const float* weight, float* loss, i64 n, i64 per_sample)
//       grid (1), block 1024: loss[0] = sum(w * (pred-target)^2) / n, one block so the sum order is
//       fixed (deterministic across runs). w = weight[i / per_sample] (one weight per sample of
//       per_sample elements: prior preservation, Min-SNR), or 1 when weight is null. With B samples
//       this is (1/B) sum_b w_b mean_b((pred-target)^2), LossReference.WeightedMse.
//   mse_loss_backward_<t>(const T* pred, const T* target, const float* weight, const float* dloss, T* dpred, i64 n, i64 per_sample)
//       1-D grid-stride, block 256: dpred = dloss[0] * 2 * w * (pred - target) / n
#include "device.cuh"

template <class T>
__global__ void mse_loss_forward(const T* __restrict__ pred, const T* __restrict__ target, const float* __restrict__ weight,
                                 float* __restrict__ loss, i64 n, i64 per_sample)
{
    CD_SHARED(float, scratch, 32);
    float s = 0.0f;
    for (i64 i = threadIdx.x; i < n; i += blockDim.x)
    {
        const float d = to_f32(pred[i]) - to_f32(target[i]);
        s += (weight ? weight[i / per_sample] : 1.0f) * d * d;
    }
    s = block_sum(s, scratch);
    if (threadIdx.x == 0) loss[0] = s / (float)n;
}

template <class T>
__global__ void mse_loss_backward(const T* __restrict__ pred, const T* __restrict__ target, const float* __restrict__ weight,
                                  const float* __restrict__ dloss, T* __restrict__ dpred, i64 n, i64 per_sample)
{
    const float k = dloss[0] * 2.0f / (float)n;
    for (i64 i = global_thread_index(); i < n; i += global_thread_count())
        dpred[i] = from_f32<T>(k * (weight ? weight[i / per_sample] : 1.0f) * (to_f32(pred[i]) - to_f32(target[i])));
}

CD_EXPORT(mse_loss_forward_f32, mse_loss_forward<float>)
CD_EXPORT(mse_loss_backward_f32, mse_loss_backward<float>)
CD_EXPORT(mse_loss_forward_bf16, mse_loss_forward<bf16_t>)
CD_EXPORT(mse_loss_forward_f16, mse_loss_forward<half_t>)
CD_EXPORT(mse_loss_backward_bf16, mse_loss_backward<bf16_t>)
CD_EXPORT(mse_loss_backward_f16, mse_loss_backward<half_t>)
