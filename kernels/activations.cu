// Activations: SiLU, GELU (erf and tanh forms), quick_gelu (CLIP), sigmoid, tanh, ReLU, and GEGLU.
//
// Launcher contract (KernelLaunchers.Activation*/Geglu*): 1-D grid-stride, block 256,
// grid min(ceil(n/256), 65535), no dynamic shared memory.
//   activation_forward_<t>(int op, const T* x, T* y, i64 n)              op: UnaryOp (U_SIGMOID ... U_QUICK_GELU)
//   activation_backward_<t>(int op, const T* x, const T* dy, T* dx, i64 n)
//   geglu_forward_<t>(const T* x, T* y, i64 rows, int half)
//       x is [rows, 2*half] = [h | g]; y [rows, half] = h * gelu_erf(g)   (diffusers GEGLU)
//   geglu_backward_<t>(const T* x, const T* dy, T* dx, i64 rows, int half)
#include "device.cuh"

CD_DEVICE float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

CD_DEVICE float gelu_erf(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }
CD_DEVICE float gelu_erf_grad(float x)
{
    const float cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752f));
    const float pdf = 0.39894228040143268f * expf(-0.5f * x * x);
    return cdf + x * pdf;
}

// tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
CD_DEVICE float gelu_tanh(float x)
{
    const float u = 0.79788456080286536f * (x + 0.044715f * x * x * x);
    return 0.5f * x * (1.0f + tanhf(u));
}
CD_DEVICE float gelu_tanh_grad(float x)
{
    const float u = 0.79788456080286536f * (x + 0.044715f * x * x * x);
    const float t = tanhf(u);
    const float du = 0.79788456080286536f * (1.0f + 3.0f * 0.044715f * x * x);
    return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * du;
}

CD_DEVICE float activation_value(int op, float x)
{
    switch (op)
    {
    case U_SIGMOID: return sigmoid(x);
    case U_SILU: return x * sigmoid(x);
    case U_TANH: return tanhf(x);
    case U_RELU: return x > 0.0f ? x : 0.0f;
    case U_GELU_ERF: return gelu_erf(x);
    case U_GELU_TANH: return gelu_tanh(x);
    case U_QUICK_GELU: return x * sigmoid(1.702f * x);
    default: return __uint_as_float(0x7fc00000u);
    }
}

CD_DEVICE float activation_grad(int op, float x)
{
    switch (op)
    {
    case U_SIGMOID: { float s = sigmoid(x); return s * (1.0f - s); }
    case U_SILU: { float s = sigmoid(x); return s * (1.0f + x * (1.0f - s)); }
    case U_TANH: { float t = tanhf(x); return 1.0f - t * t; }
    case U_RELU: return x > 0.0f ? 1.0f : 0.0f;
    case U_GELU_ERF: return gelu_erf_grad(x);
    case U_GELU_TANH: return gelu_tanh_grad(x);
    case U_QUICK_GELU: { float s = sigmoid(1.702f * x); return s + 1.702f * x * s * (1.0f - s); }
    default: return __uint_as_float(0x7fc00000u);
    }
}

template <class T>
__global__ void activation_forward(int op, const T* __restrict__ x, T* __restrict__ y, i64 n)
{
    for (i64 i = global_thread_index(); i < n; i += global_thread_count()) y[i] = from_f32<T>(activation_value(op, to_f32(x[i])));
}

template <class T>
__global__ void activation_backward(int op, const T* __restrict__ x, const T* __restrict__ dy, T* __restrict__ dx, i64 n)
{
    for (i64 i = global_thread_index(); i < n; i += global_thread_count())
        dx[i] = from_f32<T>(to_f32(dy[i]) * activation_grad(op, to_f32(x[i])));
}

template <class T>
__global__ void geglu_forward(const T* __restrict__ x, T* __restrict__ y, i64 rows, int half)
{
    const i64 n = rows * half;
    for (i64 i = global_thread_index(); i < n; i += global_thread_count())
    {
        const i64 r = i / half, c = i - r * half;
        const float h = to_f32(x[r * 2 * half + c]), g = to_f32(x[r * 2 * half + half + c]);
        y[i] = from_f32<T>(h * gelu_erf(g));
    }
}

template <class T>
__global__ void geglu_backward(const T* __restrict__ x, const T* __restrict__ dy, T* __restrict__ dx, i64 rows, int half)
{
    const i64 n = rows * half;
    for (i64 i = global_thread_index(); i < n; i += global_thread_count())
    {
        const i64 r = i / half, c = i - r * half;
        const float h = to_f32(x[r * 2 * half + c]), g = to_f32(x[r * 2 * half + half + c]);
        const float d = to_f32(dy[i]);
        dx[r * 2 * half + c] = from_f32<T>(d * gelu_erf(g));
        dx[r * 2 * half + half + c] = from_f32<T>(d * h * gelu_erf_grad(g));
    }
}

CD_EXPORT(activation_forward_f32, activation_forward<float>)
CD_EXPORT(activation_backward_f32, activation_backward<float>)
CD_EXPORT(geglu_forward_f32, geglu_forward<float>)
CD_EXPORT(geglu_backward_f32, geglu_backward<float>)
CD_EXPORT(activation_forward_bf16, activation_forward<bf16_t>)
CD_EXPORT(activation_forward_f16, activation_forward<half_t>)
CD_EXPORT(activation_backward_bf16, activation_backward<bf16_t>)
CD_EXPORT(activation_backward_f16, activation_backward<half_t>)
CD_EXPORT(geglu_forward_bf16, geglu_forward<bf16_t>)
CD_EXPORT(geglu_forward_f16, geglu_forward<half_t>)
CD_EXPORT(geglu_backward_bf16, geglu_backward<bf16_t>)
CD_EXPORT(geglu_backward_f16, geglu_backward<half_t>)
