// Elementwise math: unary ops with their backward, binary ops with NumPy broadcasting, comparisons,
// Where, casts -- on floats, and on the integer and bool (u8) values of index arithmetic.
//
// Launcher contract (KernelLaunchers.Unary/UnaryBackward/Binary/Fill/Cast/Compare/Where/...): 1-D
// grid-stride launches, block 256, grid min(ceil(n/256), 4096), no dynamic shared memory.
//   unary_forward_<t>(int op, const T* x, T* y, i64 n, float alpha)          y = f(x)
//   unary_backward_<t>(int op, const T* x, const T* dy, T* dx, i64 n, float alpha)   dx = dy * f'(x)
//   unary_integer_<t>(int op, const T* x, T* y, i64 n)                        NEG, ABS, RELU on i32/i64
//   binary_forward_<t>(int op, const T* a, const T* b, T* y, BroadcastShape s, i64 n)
//       y[i] = a[s.stride_a . idx(i)] op b[s.stride_b . idx(i)], idx = the row-major index of i in s.shape
//   binary_integer_<t>(int op, const T* a, const T* b, T* y, BroadcastShape s, i64 n)   i32, i64, u8 (bool)
//   compare_<t>(int op, const T* a, const T* b, u8* y, BroadcastShape s, i64 n)         y = a op b (0/1)
//   where_<e>(const u8* cond, const E* a, const E* b, E* y, WhereShape s, i64 n)       e = element bytes
//   logical_not(const u8* x, u8* y, i64 n)
//   cast_<from>_<to>(const From* x, To* y, i64 n)       floats, i32, i64, u8; "_bool" targets give x != 0
// `op` is UnaryOp / BinaryOp / CompareOp from device.cuh; alpha is the scalar of SCALE, ADD_SCALAR,
// POW_SCALAR, CLAMP_MIN, CLAMP_MAX. Integer division by zero gives 0 (a GPU must not trap).
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
    case U_FLOOR: return floorf(x);
    case U_CEIL: return ceilf(x);
    case U_CLAMP_MIN: return x < alpha ? alpha : x; // NaN passes through, as ONNX Clip
    case U_CLAMP_MAX: return x > alpha ? alpha : x;
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
    case U_FLOOR: case U_CEIL: return 0.0f;
    case U_CLAMP_MIN: return x < alpha ? 0.0f : 1.0f;
    case U_CLAMP_MAX: return x > alpha ? 0.0f : 1.0f;
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
    // NaN propagates (ONNX Max/Min, torch.maximum), unlike fmaxf.
    case B_MAX: return a != a || b != b ? a + b : (a > b ? a : b);
    case B_MIN: return a != a || b != b ? a + b : (a < b ? a : b);
    // x^2 is exactly x*x (torch's pow does the same); other exponents in double, rounded once.
    case B_POW: return b == 2.0f ? a * a : (float)pow((double)a, (double)b);
    case B_MOD: { const float r = fmodf(a, b); return r != 0.0f && ((r < 0.0f) != (b < 0.0f)) ? r + b : r; }
    default: return __uint_as_float(0x7fc00000u);
    }
}

template <class T> CD_DEVICE T integer_binary_value(int op, T a, T b)
{
    switch (op)
    {
    case B_ADD: return (T)(a + b);
    case B_SUB: return (T)(a - b);
    case B_MUL: return (T)(a * b);
    case B_DIV: return b == 0 ? (T)0 : (T)(a / b);
    case B_MAX: return a > b ? a : b;
    case B_MIN: return a < b ? a : b;
    case B_POW: return (T)pow((double)a, (double)b);
    case B_MOD: { if (b == 0) return (T)0; const T r = (T)(a % b); return r != 0 && ((r < 0) != (b < 0)) ? (T)(r + b) : r; }
    case B_AND: return (T)(a & b);
    case B_OR: return (T)(a | b);
    case B_XOR: return (T)(a ^ b);
    default: return (T)0;
    }
}

template <class T> CD_DEVICE u8 compare_value(int op, T a, T b)
{
    switch (op)
    {
    case C_EQUAL: return a == b;
    case C_LESS: return a < b;
    case C_GREATER: return a > b;
    case C_LESS_EQUAL: return a <= b;
    case C_GREATER_EQUAL: return a >= b;
    default: return 0;
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
__global__ void unary_integer(int op, const T* __restrict__ x, T* __restrict__ y, i64 n)
{
    for (i64 i = global_thread_index(); i < n; i += global_thread_count())
    {
        const T v = x[i];
        y[i] = op == U_NEG ? (T)-v : op == U_ABS ? (v < 0 ? (T)-v : v) : (v > 0 ? v : (T)0);
    }
}

template <class T>
__global__ void binary_forward(int op, const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ y, BroadcastShape s, i64 n)
{
    for (i64 i = global_thread_index(); i < n; i += global_thread_count())
    {
        i64 ia, ib;
        broadcast_offsets(s, i, ia, ib);
        y[i] = from_f32<T>(binary_value(op, to_f32(a[ia]), to_f32(b[ib])));
    }
}

template <class T>
__global__ void binary_integer(int op, const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ y, BroadcastShape s, i64 n)
{
    for (i64 i = global_thread_index(); i < n; i += global_thread_count())
    {
        i64 ia, ib;
        broadcast_offsets(s, i, ia, ib);
        y[i] = integer_binary_value<T>(op, a[ia], b[ib]);
    }
}

template <class T>
__global__ void compare(int op, const T* __restrict__ a, const T* __restrict__ b, u8* __restrict__ y, BroadcastShape s, i64 n)
{
    for (i64 i = global_thread_index(); i < n; i += global_thread_count())
    {
        i64 ia, ib;
        broadcast_offsets(s, i, ia, ib);
        y[i] = compare_value<T>(op, a[ia], b[ib]);
    }
}

// Comparisons of reduced-precision floats: compared as the fp32 values they hold (exact).
template <class T>
__global__ void compare_storage(int op, const T* __restrict__ a, const T* __restrict__ b, u8* __restrict__ y, BroadcastShape s, i64 n)
{
    for (i64 i = global_thread_index(); i < n; i += global_thread_count())
    {
        i64 ia, ib;
        broadcast_offsets(s, i, ia, ib);
        y[i] = compare_value<float>(op, to_f32(a[ia]), to_f32(b[ib]));
    }
}

// Where's three operands: output shape and per-operand strides (condition, a, b).
struct WhereShape
{
    int rank;
    int shape[CD_MAX_RANK];
    i64 stride[3][CD_MAX_RANK];
};

template <class E>
__global__ void where_select(const u8* __restrict__ cond, const E* __restrict__ a, const E* __restrict__ b, E* __restrict__ y, WhereShape s, i64 n)
{
    for (i64 i = global_thread_index(); i < n; i += global_thread_count())
    {
        i64 rest = i, ic = 0, ia = 0, ib = 0;
        for (int d = s.rank - 1; d >= 0; d--)
        {
            const i64 c = rest % s.shape[d];
            rest /= s.shape[d];
            ic += c * s.stride[0][d];
            ia += c * s.stride[1][d];
            ib += c * s.stride[2][d];
        }
        y[i] = cond[ic] ? a[ia] : b[ib];
    }
}

__global__ void logical_not(const u8* __restrict__ x, u8* __restrict__ y, i64 n)
{
    for (i64 i = global_thread_index(); i < n; i += global_thread_count()) y[i] = x[i] == 0;
}

template <class From, class To>
__global__ void cast(const From* __restrict__ x, To* __restrict__ y, i64 n)
{
    for (i64 i = global_thread_index(); i < n; i += global_thread_count()) y[i] = from_f32<To>(to_f32(x[i]));
}

// Between fp32 and the integer types: C conversion (float to integer truncates toward zero).
template <class From, class To>
__global__ void cast_numeric(const From* __restrict__ x, To* __restrict__ y, i64 n)
{
    for (i64 i = global_thread_index(); i < n; i += global_thread_count()) y[i] = (To)x[i];
}

template <class From>
__global__ void cast_to_bool(const From* __restrict__ x, u8* __restrict__ y, i64 n)
{
    for (i64 i = global_thread_index(); i < n; i += global_thread_count()) y[i] = x[i] != (From)0;
}

CD_EXPORT(unary_forward_f32, unary_forward<float>)
CD_EXPORT(unary_backward_f32, unary_backward<float>)
CD_EXPORT(binary_forward_f32, binary_forward<float>)
CD_EXPORT(unary_integer_i32, unary_integer<int>)
CD_EXPORT(unary_integer_i64, unary_integer<i64>)
CD_EXPORT(binary_integer_i32, binary_integer<int>)
CD_EXPORT(binary_integer_i64, binary_integer<i64>)
CD_EXPORT(binary_integer_u8, binary_integer<u8>)
CD_EXPORT(compare_f32, compare<float>)
CD_EXPORT(compare_i32, compare<int>)
CD_EXPORT(compare_i64, compare<i64>)
CD_EXPORT(compare_u8, compare<u8>)
CD_EXPORT(where_1, where_select<u8>)
CD_EXPORT(where_2, where_select<u16>)
CD_EXPORT(where_4, where_select<u32>)
CD_EXPORT(where_8, where_select<u64>)
CD_EXPORT(logical_not, logical_not)
CD_EXPORT(cast_f32_f16, cast<float, half_t>)
CD_EXPORT(cast_f16_f32, cast<half_t, float>)
CD_EXPORT(cast_f32_bf16, cast<float, bf16_t>)
CD_EXPORT(cast_bf16_f32, cast<bf16_t, float>)
CD_EXPORT(cast_f32_i32, cast_numeric<float, int>)
CD_EXPORT(cast_f32_i64, cast_numeric<float, i64>)
CD_EXPORT(cast_f32_u8, cast_numeric<float, u8>)
CD_EXPORT(cast_i32_f32, cast_numeric<int, float>)
CD_EXPORT(cast_i64_f32, cast_numeric<i64, float>)
CD_EXPORT(cast_u8_f32, cast_numeric<u8, float>)
CD_EXPORT(cast_i32_i64, cast_numeric<int, i64>)
CD_EXPORT(cast_i64_i32, cast_numeric<i64, int>)
CD_EXPORT(cast_u8_i32, cast_numeric<u8, int>)
CD_EXPORT(cast_u8_i64, cast_numeric<u8, i64>)
CD_EXPORT(cast_i32_u8, cast_numeric<int, u8>)
CD_EXPORT(cast_i64_u8, cast_numeric<i64, u8>)
CD_EXPORT(cast_f32_bool, cast_to_bool<float>)
CD_EXPORT(cast_i32_bool, cast_to_bool<int>)
CD_EXPORT(cast_i64_bool, cast_to_bool<i64>)
CD_EXPORT(cast_u8_bool, cast_to_bool<u8>)
CD_EXPORT(unary_forward_bf16, unary_forward<bf16_t>)
CD_EXPORT(unary_forward_f16, unary_forward<half_t>)
CD_EXPORT(unary_backward_bf16, unary_backward<bf16_t>)
CD_EXPORT(unary_backward_f16, unary_backward<half_t>)
CD_EXPORT(binary_forward_bf16, binary_forward<bf16_t>)
CD_EXPORT(binary_forward_f16, binary_forward<half_t>)
CD_EXPORT(compare_bf16, compare_storage<bf16_t>)
CD_EXPORT(compare_f16, compare_storage<half_t>)
CD_EXPORT(cast_bf16_f16, cast<bf16_t, half_t>)
CD_EXPORT(cast_f16_bf16, cast<half_t, bf16_t>)
