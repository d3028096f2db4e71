// CudaDream device header: the only header a kernel includes.
//
// One source, two executors (DESIGN.md): under NVRTC (__CUDACC_RTC__) everything below is
// builtins and inline PTX; under the host compiler kernels/emu/emu.h supplies the same names in
// plain C++ (fibers for threads, adversarial scheduling). No CUDA toolkit header is included.
//
// Conventions every kernels/*.cu follows:
//   * Static shared memory is declared with CD_SHARED(type, name, count) and dynamic shared memory
//     is reached through dynamic_smem<T>() -- never a raw __shared__ (the emulator must own shared
//     memory to fill it with garbage at block start).
//   * Each exported kernel instantiation is listed with CD_EXPORT(alias, name-expression) at the
//     end of its file. The host finds kernels by alias: NVRTC resolves the name expression to a
//     lowered (mangled) name; the emulator exports `cdk_<alias>` as an extern "C" trampoline.
//   * Launcher contract (grid, block, dynamic shared bytes, argument order) is documented in each
//     file's header comment and implemented once in CudaDream.Engine.Backends.KernelLaunchers.
#pragma once

#ifdef __CUDACC_RTC__
// ----------------------------------------------------------------------------------- NVRTC side
typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef long long i64;

#define CD_DEVICE __device__ __forceinline__
#define CD_SHARED(type, name, count) __shared__ type name[count]
#define CD_EXPORT(alias, ...)
#define CD_EMU_YIELD()

template <class T> CD_DEVICE T* dynamic_smem()
{
    extern __shared__ __align__(16) unsigned char cd_dynamic_smem[];
    return reinterpret_cast<T*>(cd_dynamic_smem);
}

CD_DEVICE u32 smem_address(const void* p)
{
    u32 a;
    asm volatile("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
}

// Asynchronous global->shared copies (sm_80+). Below sm_80 they are ordinary copies, so the same
// kernel source is correct on every tier; the emulator completes them only at the wait.
template <int Bytes> CD_DEVICE void cp_async(void* smem_dst, const void* gmem_src)
{
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2;" ::"r"(smem_address(smem_dst)), "l"(gmem_src), "n"(Bytes));
#else
    if (Bytes == 4) *reinterpret_cast<u32*>(smem_dst) = *reinterpret_cast<const u32*>(gmem_src);
    else if (Bytes == 8) *reinterpret_cast<uint2*>(smem_dst) = *reinterpret_cast<const uint2*>(gmem_src);
    else *reinterpret_cast<uint4*>(smem_dst) = *reinterpret_cast<const uint4*>(gmem_src);
#endif
}
CD_DEVICE void cp_async_commit()
{
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;");
#endif
}
template <int Pending> CD_DEVICE void cp_async_wait()
{
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;" ::"n"(Pending));
#endif
}

// Tensor-core fragments, PTX ISA "Matrix fragments for mma.m16n8k8". groupID = lane>>2,
// tig = lane&3. f16/bf16: A 2 regs (f16x2): reg r holds row groupID+8r, columns 2tig,2tig+1;
// B 1 reg: rows(k) 2tig,2tig+1 of column(n) groupID. tf32: A 4 regs: (g,t),(g+8,t),(g,t+4),(g+8,t+4);
// B 2 regs: (k=t,n=g),(k=t+4,n=g). C/D 4 f32: reg r at row g+8(r>>1), column 2t+(r&1).
CD_DEVICE void mma_m16n8k8_f16(float d[4], const u32 a[2], const u32 b[1], const float c[4])
{
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, {%7,%8,%9,%10};"
                 : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(b[0]), "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
}
#if __CUDA_ARCH__ >= 800
CD_DEVICE void mma_m16n8k8_bf16(float d[4], const u32 a[2], const u32 b[1], const float c[4])
{
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, {%7,%8,%9,%10};"
                 : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(b[0]), "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
}
CD_DEVICE void mma_m16n8k8_tf32(float d[4], const u32 a[4], const u32 b[2], const float c[4])
{
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};"
                 : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]),
                   "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
}
CD_DEVICE u32 to_tf32(float x)
{
    u32 r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
    return r;
}
// PTX ISA "Matrix Fragments for mma.m16n8k16 with floating point type" (layouts at mma_m16n8k16_f16 below).
CD_DEVICE void mma_m16n8k16_f16_native(float d[4], const u32 a[4], const u32 b[2], const float c[4])
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};"
                 : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]),
                   "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
}
CD_DEVICE void mma_m16n8k16_bf16_native(float d[4], const u32 a[4], const u32 b[2], const float c[4])
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};"
                 : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]),
                   "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
}
#endif

// ldmatrix (sm_75+), PTX ISA "Warp-level matrix load instruction: ldmatrix": see ldmatrix_x4 below for the layout.
// Every lane passes the address of the row it supplies; the instruction takes a shared-space address.
CD_DEVICE void ldmatrix_x1(u32 r[1], const void* row)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];" : "=r"(r[0]) : "r"(smem_address(row)));
}
CD_DEVICE void ldmatrix_x2(u32 r[2], const void* row)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];" : "=r"(r[0]), "=r"(r[1]) : "r"(smem_address(row)));
}
CD_DEVICE void ldmatrix_x4(u32 r[4], const void* row)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_address(row)));
}
CD_DEVICE void ldmatrix_x1_trans(u32 r[1], const void* row)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];" : "=r"(r[0]) : "r"(smem_address(row)));
}
CD_DEVICE void ldmatrix_x2_trans(u32 r[2], const void* row)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];" : "=r"(r[0]), "=r"(r[1]) : "r"(smem_address(row)));
}
CD_DEVICE void ldmatrix_x4_trans(u32 r[4], const void* row)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_address(row)));
}

// Stops the kernel: a path that must never run on this architecture (the launcher does not pick it).
CD_DEVICE void cd_unreachable_on_this_arch(const char*) { asm volatile("trap;"); }

#else
// ------------------------------------------------------------------------------ emulator side
#include "emu/emu.h"
#define CD_DEVICE inline
#endif

// ------------------------------------------------------------------------------ mma.m16n8k16
// PTX ISA "Matrix Fragments for mma.m16n8k16 with floating point type", f16/bf16, groupID g = lane>>2, tig t = lane&3:
//   A (16x16, row) 4 regs (2 elements each, the lower column in the low half): a0 row g cols 2t,2t+1; a1 row g+8 cols 2t,2t+1;
//     a2 row g cols 2t+8,2t+9; a3 row g+8 cols 2t+8,2t+9.
//   B (16x8, col) 2 regs: b0 rows(k) 2t,2t+1 of column(n) g; b1 rows 2t+8,2t+9 of column g.
//   C/D 4 f32 as m16n8k8: reg r at row g+8(r>>1), column 2t+(r&1).
// So a k16 product is exactly two k8 products, (a0,a1,b0) then (a2,a3,b1): that is how sm_75, which has
// m16n8k8 but no m16n8k16 for f16, runs it. bf16 mma needs sm_80: below it the launcher never picks a bf16 mma kernel.
CD_DEVICE void mma_m16n8k16_f16(float d[4], const u32 a[4], const u32 b[2], const float c[4])
{
#if __CUDA_ARCH__ >= 800
    mma_m16n8k16_f16_native(d, a, b, c);
#else
    float lower_k[4];
    const u32 a_lo[2] = {a[0], a[1]}, a_hi[2] = {a[2], a[3]}, b_lo[1] = {b[0]}, b_hi[1] = {b[1]};
    mma_m16n8k8_f16(lower_k, a_lo, b_lo, c);
    mma_m16n8k8_f16(d, a_hi, b_hi, lower_k);
#endif
}
CD_DEVICE void mma_m16n8k16_bf16(float d[4], const u32 a[4], const u32 b[2], const float c[4])
{
#if __CUDA_ARCH__ >= 800
    mma_m16n8k16_bf16_native(d, a, b, c);
#else
    cd_unreachable_on_this_arch("mma.sync with bf16 operands needs sm_80");
    for (int r = 0; r < 4; r++) d[r] = c[r];
#endif
}
// ldmatrix.m8n8 .x1/.x2/.x4 (.b16): lanes 8i..8i+7 give the addresses of rows 0..7 of matrix i (16 bytes each,
// 16-byte aligned, shared memory; .x1 reads lanes 0-7, .x2 lanes 0-15). Lane l receives register i of matrix i:
// without .trans row l>>2, columns 2(l&3), 2(l&3)+1 (the lower column in the low half) -- an A or B fragment of
// mma.m16n8k8/k16; with .trans the transpose: rows 2(l&3), 2(l&3)+1 of column l>>2.

// ------------------------------------------------------------------------------ shared helpers
#define CD_WARP 32
#define CD_FULL_MASK 0xffffffffu
#define CD_INFINITY __int_as_float(0x7f800000) // no toolkit header, so no INFINITY macro under NVRTC

CD_DEVICE i64 global_thread_index() { return (i64)blockIdx.x * blockDim.x + threadIdx.x; }
CD_DEVICE i64 global_thread_count() { return (i64)gridDim.x * blockDim.x; }
CD_DEVICE int lane_id() { return (int)(threadIdx.x & 31); }
CD_DEVICE int warp_id() { return (int)(threadIdx.x >> 5); }

// Storage types for reduced precision: bit patterns, converted at load/store (math is fp32).
struct half_t { u16 bits; };
struct bf16_t { u16 bits; };

CD_DEVICE float bits_to_float(u32 u) { return __uint_as_float(u); }
CD_DEVICE u32 float_to_bits(float f) { return __float_as_uint(f); }

CD_DEVICE float half_to_float(u16 h)
{
    u32 sign = (u32)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0x1f) return bits_to_float(sign | 0x7f800000u | (man << 13));
    if (exp == 0)
    {
        if (man == 0) return bits_to_float(sign);
        float f = (float)man * 5.9604644775390625e-8f; // 2^-24, subnormal
        return sign ? -f : f;
    }
    return bits_to_float(sign | ((exp + 112) << 23) | (man << 13));
}

// Round to nearest even, as __float2half_rn does.
CD_DEVICE u16 float_to_half(float f)
{
    u32 u = float_to_bits(f), sign = (u >> 16) & 0x8000;
    u32 a = u & 0x7fffffffu;
    if (a >= 0x7f800000u) return (u16)(sign | 0x7c00 | (a > 0x7f800000u ? 0x200 : 0));
    if (a >= 0x477ff000u) return (u16)(sign | 0x7c00); // rounds past 65504
    if (a < 0x38800000u)
    {   // subnormal half: scale to an integer count of 2^-24 and round to even
        float v = bits_to_float(a) * 16777216.0f;
        u32 q = (u32)v; float rem = v - (float)q;
        if (rem > 0.5f || (rem == 0.5f && (q & 1))) q++;
        return (u16)(sign | q);
    }
    u32 r = a + 0x0fffu + ((a >> 13) & 1) - 0x38000000u; // rebias 127->15, round to nearest even at bit 13
    return (u16)(sign | (r >> 13));
}

CD_DEVICE float bf16_to_float(u16 b) { return bits_to_float((u32)b << 16); }
CD_DEVICE u16 float_to_bf16(float f)
{
    u32 u = float_to_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u16)((u >> 16) | 0x40);
    return (u16)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
}

// load/store of any storage type as fp32: every templated kernel is written against these.
CD_DEVICE float to_f32(float x) { return x; }
CD_DEVICE float to_f32(half_t x) { return half_to_float(x.bits); }
CD_DEVICE float to_f32(bf16_t x) { return bf16_to_float(x.bits); }
template <class T> CD_DEVICE T from_f32(float x);
template <> CD_DEVICE float from_f32<float>(float x) { return x; }
template <> CD_DEVICE half_t from_f32<half_t>(float x) { half_t h; h.bits = float_to_half(x); return h; }
template <> CD_DEVICE bf16_t from_f32<bf16_t>(float x) { bf16_t h; h.bits = float_to_bf16(x); return h; }

CD_DEVICE u32 pack_half2(float lo, float hi) { return (u32)float_to_half(lo) | ((u32)float_to_half(hi) << 16); }
CD_DEVICE u32 pack_bf162(float lo, float hi) { return (u32)float_to_bf16(lo) | ((u32)float_to_bf16(hi) << 16); }

CD_DEVICE bool is_finite(float x) { return (float_to_bits(x) & 0x7f800000u) != 0x7f800000u; }

// Warp reductions: butterfly over all 32 lanes, every lane gets the result.
CD_DEVICE float warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(CD_FULL_MASK, v, o);
    return v;
}
CD_DEVICE float warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(CD_FULL_MASK, v, o));
    return v;
}

// Block-wide sum with a 32-float scratch array; every thread gets the result. blockDim.x must be a
// multiple of 32. The trailing barrier lets callers reuse `scratch` immediately.
CD_DEVICE float block_sum(float v, float* scratch)
{
    v = warp_sum(v);
    int nwarps = (int)(blockDim.x >> 5);
    if (lane_id() == 0) scratch[warp_id()] = v;
    __syncthreads();
    float t = lane_id() < nwarps ? scratch[lane_id()] : 0.0f;
    t = warp_sum(t);
    __syncthreads();
    return t;
}
CD_DEVICE float block_max(float v, float* scratch)
{
    v = warp_max(v);
    int nwarps = (int)(blockDim.x >> 5);
    if (lane_id() == 0) scratch[warp_id()] = v;
    __syncthreads();
    float t = lane_id() < nwarps ? scratch[lane_id()] : -3.402823466e38f;
    t = warp_max(t);
    __syncthreads();
    return t;
}

// Elementwise op codes shared with the host (KernelLaunchers.UnaryOp / BinaryOp).
enum UnaryOp
{
    U_IDENTITY = 0, U_NEG, U_EXP, U_LOG, U_SQRT, U_RSQRT, U_SIGMOID, U_SILU, U_TANH, U_RELU, U_ABS,
    U_ERF, U_SIN, U_COS, U_GELU_ERF, U_GELU_TANH, U_QUICK_GELU, U_SCALE, U_ADD_SCALAR, U_RECIPROCAL,
    U_SQUARE, U_POW_SCALAR, U_FLOOR, U_CEIL, U_CLAMP_MIN, U_CLAMP_MAX
};
// B_MOD is ONNX Mod with fmod = 0 (the divisor's sign); B_AND..B_XOR are for bool (u8) operands.
enum BinaryOp { B_ADD = 0, B_SUB, B_MUL, B_DIV, B_MAX, B_MIN, B_POW, B_MOD, B_AND, B_OR, B_XOR };
enum CompareOp { C_EQUAL = 0, C_LESS, C_GREATER, C_LESS_EQUAL, C_GREATER_EQUAL };

// Broadcast geometry: output shape and per-operand element strides (0 on broadcast axes).
#define CD_MAX_RANK 6
struct BroadcastShape
{
    int rank;
    int shape[CD_MAX_RANK];
    i64 stride_a[CD_MAX_RANK];
    i64 stride_b[CD_MAX_RANK];
};

// Element offsets of output element i in the two operands of a BroadcastShape.
CD_DEVICE void broadcast_offsets(const BroadcastShape& s, i64 i, i64& ia, i64& ib)
{
    i64 rest = i;
    ia = 0;
    ib = 0;
    for (int d = s.rank - 1; d >= 0; d--)
    {
        const i64 c = rest % s.shape[d];
        rest /= s.shape[d];
        ia += c * s.stride_a[d];
        ib += c * s.stride_b[d];
    }
}
