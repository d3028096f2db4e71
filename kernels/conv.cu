// 2-D convolution as im2col + GEMM (the GEMM is the device's cuBLAS-semantics gemm, one strided-batched
// call over the images), and its backward: dcol = WT . dY then col2im, dW = sum_n dY_n . col_nT,
// dbias = sum of dY per channel. x is [N, C, H, W]; col is N blocks of [C*KH*KW, OH*OW] row-major.
//
// Launcher contract (ConvKernels): 1-D grid-stride, block 256, no dynamic shared memory.
//   im2col_<t>(const T* x, T* col, ConvGeometry g, int N)  col[n][(c*KH+i)*KW+j, oy*OW+ox] = x[n, c, oy*SH-PH+i*DH, ox*SW-PW+j*DW] or 0
//   col2im_<t>(const T* col, T* x, ConvGeometry g, int N)  x = the adjoint of im2col (gathers, no atomics)
//   channel_bias_add_<t>(T* y, const float* bias, int N, int C, i64 S)      y[n,c,s] += bias[c]
//   channel_bias_grad_<t>(const T* dy, float* dbias, int N, int C, i64 S)   grid (C): dbias[c] = sum dy[:,c,:]
#include "device.cuh"

struct ConvGeometry
{
    int C, H, W, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW;
};

template <class T>
__global__ void im2col(const T* __restrict__ x, T* __restrict__ col, ConvGeometry g, int N)
{
    const i64 spatial = (i64)g.OH * g.OW;
    const i64 per = (i64)g.C * g.KH * g.KW * spatial, image = (i64)g.C * g.H * g.W;
    const i64 n = per * N;
    for (i64 at = global_thread_index(); at < n; at += global_thread_count())
    {
        const i64 b = at / per, idx = at - b * per;
        const T* xb = x + b * image;
        const i64 row = idx / spatial, s = idx - row * spatial;
        const int oy = (int)(s / g.OW), ox = (int)(s - (i64)oy * g.OW);
        const int j = (int)(row % g.KW), i = (int)((row / g.KW) % g.KH), c = (int)(row / ((i64)g.KW * g.KH));
        const int iy = oy * g.SH - g.PH + i * g.DH, ix = ox * g.SW - g.PW + j * g.DW;
        col[at] = (iy >= 0 && iy < g.H && ix >= 0 && ix < g.W) ? xb[((i64)c * g.H + iy) * g.W + ix] : from_f32<T>(0.0f);
    }
}

template <class T>
__global__ void col2im(const T* __restrict__ col_all, T* __restrict__ x, ConvGeometry g, int N)
{
    const i64 spatial = (i64)g.OH * g.OW;
    const i64 image = (i64)g.C * g.H * g.W, per = (i64)g.C * g.KH * g.KW * spatial;
    const i64 n = image * N;
    for (i64 at = global_thread_index(); at < n; at += global_thread_count())
    {
        const i64 b = at / image, idx = at - b * image;
        const T* col = col_all + b * per;
        const int ix = (int)(idx % g.W), iy = (int)((idx / g.W) % g.H), c = (int)(idx / ((i64)g.W * g.H));
        float acc = 0.0f;
        for (int i = 0; i < g.KH; i++)
        {
            const int ty = iy + g.PH - i * g.DH;
            if (ty < 0 || ty % g.SH != 0) continue;
            const int oy = ty / g.SH;
            if (oy >= g.OH) continue;
            for (int j = 0; j < g.KW; j++)
            {
                const int tx = ix + g.PW - j * g.DW;
                if (tx < 0 || tx % g.SW != 0) continue;
                const int ox = tx / g.SW;
                if (ox >= g.OW) continue;
                acc += to_f32(col[(((i64)c * g.KH + i) * g.KW + j) * spatial + (i64)oy * g.OW + ox]);
            }
        }
        x[at] = from_f32<T>(acc);
    }
}

template <class T>
__global__ void channel_bias_add(T* __restrict__ y, const float* __restrict__ bias, int N, int C, i64 S)
{
    const i64 n = (i64)N * C * S;
    for (i64 idx = global_thread_index(); idx < n; idx += global_thread_count())
    {
        const int c = (int)((idx / S) % C);
        y[idx] = from_f32<T>(to_f32(y[idx]) + bias[c]);
    }
}

template <class T>
__global__ void channel_bias_grad(const T* __restrict__ dy, float* __restrict__ dbias, int N, int C, i64 S)
{
    CD_SHARED(float, scratch, 32);
    const int c = blockIdx.x;
    float s = 0.0f;
    for (int n = 0; n < N; n++)
        for (i64 i = threadIdx.x; i < S; i += blockDim.x) s += to_f32(dy[((i64)n * C + c) * S + i]);
    s = block_sum(s, scratch);
    if (threadIdx.x == 0) dbias[c] = s;
}

CD_EXPORT(im2col_f32, im2col<float>)
CD_EXPORT(col2im_f32, col2im<float>)
CD_EXPORT(channel_bias_add_f32, channel_bias_add<float>)
CD_EXPORT(channel_bias_grad_f32, channel_bias_grad<float>)
CD_EXPORT(im2col_bf16, im2col<bf16_t>)
CD_EXPORT(im2col_f16, im2col<half_t>)
CD_EXPORT(col2im_bf16, col2im<bf16_t>)
CD_EXPORT(col2im_f16, col2im<half_t>)
CD_EXPORT(channel_bias_add_bf16, channel_bias_add<bf16_t>)
CD_EXPORT(channel_bias_add_f16, channel_bias_add<half_t>)
CD_EXPORT(channel_bias_grad_bf16, channel_bias_grad<bf16_t>)
CD_EXPORT(channel_bias_grad_f16, channel_bias_grad<half_t>)
