// Constant padding of the last two axes of [NC, H, W] (ONNX Pad mode=constant on H and W; the VAE
// pads +1 right and bottom before its stride-2 convs). The backward is a Slice (Pad's gradient rule).
//
// Launcher contract (PadKernels.Spatial): 1-D grid-stride, block 256. Pads are >= 0.
//   pad2d_forward_<t>(const T* x, T* y, i64 NC, int H, int W, int top, int bottom, int left, int right, float value)
#include "device.cuh"

template <class T>
__global__ void pad2d_forward(const T* __restrict__ x, T* __restrict__ y, i64 NC, int H, int W, int top, int bottom,
                              int left, int right, float value)
{
    const int OH = H + top + bottom, OW = W + left + right;
    const i64 n = NC * OH * OW;
    const T fillv = from_f32<T>(value);
    for (i64 idx = global_thread_index(); idx < n; idx += global_thread_count())
    {
        const int ox = (int)(idx % OW), oy = (int)((idx / OW) % OH);
        const i64 p = idx / ((i64)OW * OH);
        const int iy = oy - top, ix = ox - left;
        y[idx] = (iy >= 0 && iy < H && ix >= 0 && ix < W) ? x[(p * H + iy) * W + ix] : fillv;
    }
}

CD_EXPORT(pad2d_forward_f32, pad2d_forward<float>)
CD_EXPORT(pad2d_forward_bf16, pad2d_forward<bf16_t>)
CD_EXPORT(pad2d_forward_f16, pad2d_forward<half_t>)
