// Nearest-neighbour resize by integer factors (ONNX Resize nearest, asymmetric, floor: output
// pixel (y, x) reads input (y / FY, x / FX)), forward and backward. x is [NC, H, W].
//
// Launcher contract (KernelLaunchers.ResizeNearest*): 1-D grid-stride, block 256.
//   resize_nearest_forward_<t>(const T* x, T* y, i64 NC, int H, int W, int FY, int FX)
//   resize_nearest_backward_<t>(const T* dy, T* dx, i64 NC, int H, int W, int FY, int FX)
//       dx[y, x] = sum of the FY*FX output gradients that read it (gathered, no atomics)
#include "device.cuh"

template <class T>
__global__ void resize_nearest_forward(const T* __restrict__ x, T* __restrict__ y, i64 NC, int H, int W, int FY, int FX)
{
    const int OH = H * FY, OW = W * FX;
    const i64 n = NC * OH * OW;
    for (i64 idx = global_thread_index(); idx < n; idx += global_thread_count())
    {
        const int ox = (int)(idx % OW), oy = (int)((idx / OW) % OH);
        const i64 p = idx / ((i64)OW * OH);
        y[idx] = x[(p * H + oy / FY) * W + ox / FX];
    }
}

template <class T>
__global__ void resize_nearest_backward(const T* __restrict__ dy, T* __restrict__ dx, i64 NC, int H, int W, int FY, int FX)
{
    const int OW = W * FX;
    const i64 n = NC * H * W;
    for (i64 idx = global_thread_index(); idx < n; idx += global_thread_count())
    {
        const int ix = (int)(idx % W), iy = (int)((idx / W) % H);
        const i64 p = idx / ((i64)W * H);
        float acc = 0.0f;
        for (int a = 0; a < FY; a++)
            for (int b = 0; b < FX; b++)
                acc += to_f32(dy[(p * H * FY + (i64)iy * FY + a) * OW + (i64)ix * FX + b]);
        dx[idx] = from_f32<T>(acc);
    }
}

CD_EXPORT(resize_nearest_forward_f32, resize_nearest_forward<float>)
CD_EXPORT(resize_nearest_backward_f32, resize_nearest_backward<float>)
CD_EXPORT(resize_nearest_forward_bf16, resize_nearest_forward<bf16_t>)
CD_EXPORT(resize_nearest_forward_f16, resize_nearest_forward<half_t>)
CD_EXPORT(resize_nearest_backward_bf16, resize_nearest_backward<bf16_t>)
CD_EXPORT(resize_nearest_backward_f16, resize_nearest_backward<half_t>)
