// Elementwise math: unary ops with their backward, binary ops with NumPy broadcasting, fill, cast.
//
// Launcher contract (KernelLaunchers.Unary/UnaryBackward/Binary/Fill/Cast): 1-D grid-stride
// launches, block 256, grid min(ceil(n/256), 65535), no dynamic shared memory.
//   unary_forward_<t>(int op, const T* x, T* y, i64 n, float alpha)          y = f(x)
//   unary_backward_<t>(int op, const T* x, const T* dy, T* dx, i64 n, float alpha)   dx = dy * f'(x)
//   binary_forward_<t>(int op, const T* a, const T* b, T* y, BroadcastShape s, i64 n)
//       y[i] = a[s.stride_a . idx(i)] op b[s.stride_b . idx(i)], idx = the row-major index of i in s.shape
//   fill_<t>(T* y, i64 n, float value)
//   cast_<from>_<to>(const From* x, To* y, i64 n)
// `op` is UnaryOp / BinaryOp from device.cuh; alpha is the scalar of SCALE, ADD_SCALAR, POW_SCALAR.
// Activations (SiLU, GELU, quick_gelu, ...) live in activations.cu.
#include "device.cuh"

CD_DEVICE float unary_value(int op, float x, float alpha)
{
    switch (op)
    {
    case U_IDENTITY: return x;
    case U_NEG: return -x;
    case U_EXP: return expf(x);
    case U_LOG: return logf(x);
    case U_SQRT: return sqrtf(x);
    case U_RSQRT: return rsqrtf(x);
    case U_ABS: return fabsf(x);
    case U_ERF: return erff(x);
    case U_SIN: return sinf(x);
    case U_COS: return cosf(x);
    case U_SCALE: return alpha * x;
    case U_ADD_SCALAR: return x + alpha;
    case U_RECIPROCAL: return 1.0f / x;
    case U_SQUARE: return x * x;
    case U_POW_SCALAR: return powf(x, alpha);
    default: return __uint_as_float(0x7fc00000u); // unknown op: NaN, so a wrong code cannot pass a test
    }
}

// d f(x) / dx
CD_DEVICE float unary_derivative(int op, float x, float alpha)
{
    switch (op)
    {
    case U_IDENTITY: return 1.0f;
    case U_NEG: return -1.0f;
    case U_EXP: return expf(x);
    case U_LOG: return 1.0f / x;
    case U_SQRT: return 0.5f / sqrtf(x);
    case U_RSQRT: return -0.5f * rsqrtf(x) / x;
    case U_ABS: return x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : 0.0f);
    case U_ERF: return 1.1283791670955126f * expf(-x * x); // 2/sqrt(pi)
    case U_SIN: return cosf(x);
    case U_COS: return -sinf(x);
    case U_SCALE: return alpha;
    case U_ADD_SCALAR: return 1.0f;
    case U_RECIPROCAL: return -1.0f / (x * x);
    case U_SQUARE: return 2.0f * x;
    case U_POW_SCALAR: return alpha * powf(x, alpha - 1.0f);
    default: return __uint_as_float(0x7fc00000u);
    }
}

CD_DEVICE float binary_value(int op, float a, float b)
{
    switch (op)
    {
    case B_ADD: return a + b;
    case B_SUB: return a - b;
    case B_MUL: return a * b;
    case B_DIV: return a / b;
    case B_MAX: return fmaxf(a, b);
    case B_MIN: return fminf(a, b);
    case B_POW: return powf(a, b);
    default: return __uint_as_float(0x7fc00000u);
    }
}

template <class T>
__global__ void unary_forward(int op, const T* __restrict__ x, T* __restrict__ y, i64 n, float alpha)
{
    for (i64 i = global_thread_index(); i < n; i += global_thread_count()) y[i] = from_f32<T>(unary_value(op, to_f32(x[i]), alpha));
}

template <class T>
__global__ void unary_backward(int op, const T* __restrict__ x, const T* __restrict__ dy, T* __restrict__ dx, i64 n, float alpha)
{
    for (i64 i = global_thread_index(); i < n; i += global_thread_count())
        dx[i] = from_f32<T>(to_f32(dy[i]) * unary_derivative(op, to_f32(x[i]), alpha));
}

template <class T>
__global__ void binary_forward(int op, const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ y, BroadcastShape s, i64 n)
{
    for (i64 i = global_thread_index(); i < n; i += global_thread_count())
    {
        i64 rest = i, ia = 0, ib = 0;
        for (int d = s.rank - 1; d >= 0; d--)
        {
            i64 c = rest % s.shape[d];
            rest /= s.shape[d];
            ia += c * s.stride_a[d];
            ib += c * s.stride_b[d];
        }
        y[i] = from_f32<T>(binary_value(op, to_f32(a[ia]), to_f32(b[ib])));
    }
}

template <class T>
__global__ void fill(T* __restrict__ y, i64 n, float value)
{
    const T v = from_f32<T>(value);
    for (i64 i = global_thread_index(); i < n; i += global_thread_count()) y[i] = v;
}

template <class From, class To>
__global__ void cast(const From* __restrict__ x, To* __restrict__ y, i64 n)
{
    for (i64 i = global_thread_index(); i < n; i += global_thread_count()) y[i] = from_f32<To>(to_f32(x[i]));
}

CD_EXPORT(unary_forward_f32, unary_forward<float>)
CD_EXPORT(unary_backward_f32, unary_backward<float>)
CD_EXPORT(binary_forward_f32, binary_forward<float>)
CD_EXPORT(fill_f32, fill<float>)
CD_EXPORT(cast_f32_f16, cast<float, half_t>)
CD_EXPORT(cast_f16_f32, cast<half_t, float>)
CD_EXPORT(cast_f32_bf16, cast<float, bf16_t>)
CD_EXPORT(cast_bf16_f32, cast<bf16_t, float>)
