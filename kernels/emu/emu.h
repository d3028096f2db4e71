// The CUDA execution model in plain C++, for compiling kernels/*.cu with the host compiler.
//
// Every GPU thread of a block is a user-level fiber (runtime.cpp: a few instructions of assembly
// switch stacks, no system call). A fiber runs until it reaches a barrier, a warp collective
// (shuffle, vote, mma) or its end; the scheduler then resumes the others. The emulation is
// adversarial so that bugs that a GPU may hide fail here:
//   * the order in which threads resume is shuffled at every barrier and rotated to a random start at
//     every warp collective;
//   * shared memory is filled with random bytes when a block starts (dynamic) or first declares it (static);
//   * cp.async copies land only at the matching wait, reading the source at that moment;
//   * a thread that exits while others wait at __syncthreads, a warp collective whose mask names
//     an exited lane, or a deadlock stops the launch with an error;
//   * allocations can be guarded (a PROT_NONE page right after -- or before -- the bytes), and a
//     fault inside a launch is reported with the address and the allocation it missed.
#pragma once
#include <cmath>
#include <math.h>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

typedef uint8_t u8;
typedef uint16_t u16;
typedef uint32_t u32;
typedef uint64_t u64;
typedef int64_t i64;

#ifndef __CUDA_ARCH__
#error "build the emulator with -D__CUDA_ARCH__=<750|800|900>"
#endif

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __restrict__ __restrict
#define CD_SHARED(type, name, count) type* name = ::emu::static_shared<type>(count)

struct dim3 { unsigned x = 1, y = 1, z = 1; };
struct uint2 { u32 x, y; };
struct uint4 { u32 x, y, z, w; };
struct float2 { float x, y; };
struct float4 { float x, y, z, w; };

namespace emu {

struct Fiber;
struct Block;

// The fiber now running on this OS thread (initial-exec TLS: one load, no __tls_get_addr).
extern thread_local Fiber* current __attribute__((tls_model("initial-exec")));

struct ThreadCoords { dim3 thread, block, block_dim, grid_dim; };
// A fiber starts with its coordinates, so reading threadIdx is one TLS load and one offset.
inline const ThreadCoords& coords() { return *reinterpret_cast<const ThreadCoords*>(current); }

void* static_shared_bytes(size_t bytes, size_t align);
void* dynamic_shared();
void syncthreads();
void syncwarp(u32 mask);
// Warp collective: every lane in `mask` contributes `bytes` (<= 64) of `mine`; when all have arrived
// each lane gets a view of all 32 contributions, lane l's at view + l * kExchangeStride (lanes outside
// the mask hold stale bytes). The view stays valid until the lane's next collective: the buffers
// alternate, and a buffer is reused only after every lane arrived at the collective in between.
const size_t kExchangeStride = 64;
const u8* warp_exchange(u32 mask, const void* mine, size_t bytes);
void async_copy(void* dst, const void* src, int bytes);
void async_commit();
void async_wait(int pending);
[[noreturn]] void fail(const char* fmt, ...);

template <class T> T* static_shared(size_t count)
{
    return static_cast<T*>(static_shared_bytes(sizeof(T) * count, alignof(T) < 16 ? 16 : alignof(T)));
}

template <class T> T shfl_generic(u32 mask, T v, int src, int width, int mode)
{
    static_assert(sizeof(T) <= 8, "shuffle of more than 8 bytes");
    const u8* all = warp_exchange(mask, &v, sizeof(T));
    int lane = (int)(coords().thread.x & 31);
    int base = lane & ~(width - 1), in = lane - base, s;
    switch (mode)
    {
    case 0: s = base + (src & (width - 1)); break;            // idx
    case 1: s = in + src < width ? lane + src : lane; break;  // down
    case 2: s = in - src >= 0 ? lane - src : lane; break;     // up
    default: s = base + ((in ^ src) & (width - 1)); break;    // xor (stays inside the segment)
    }
    if (!((mask >> s) & 1u)) fail("shuffle reads lane %d which is not in mask %08x", s, mask);
    T r;
    std::memcpy(&r, all + s * kExchangeStride, sizeof(T));
    return r;
}

} // namespace emu

#define threadIdx (::emu::coords().thread)
#define blockIdx (::emu::coords().block)
#define blockDim (::emu::coords().block_dim)
#define gridDim (::emu::coords().grid_dim)

inline void __syncthreads() { emu::syncthreads(); }
inline void __syncwarp(u32 mask = 0xffffffffu) { emu::syncwarp(mask); }
inline void __threadfence() {}
inline void __threadfence_block() {}

template <class T> inline T __shfl_sync(u32 m, T v, int src, int w = 32) { return emu::shfl_generic(m, v, src, w, 0); }
template <class T> inline T __shfl_down_sync(u32 m, T v, unsigned d, int w = 32) { return emu::shfl_generic(m, v, (int)d, w, 1); }
template <class T> inline T __shfl_up_sync(u32 m, T v, unsigned d, int w = 32) { return emu::shfl_generic(m, v, (int)d, w, 2); }
template <class T> inline T __shfl_xor_sync(u32 m, T v, int x, int w = 32) { return emu::shfl_generic(m, v, x, w, 3); }

inline u32 __ballot_sync(u32 mask, int pred)
{
    int mine = pred != 0;
    const u8* all = emu::warp_exchange(mask, &mine, sizeof(int));
    u32 r = 0;
    for (int i = 0; i < 32; i++) if (((mask >> i) & 1u) && all[i * emu::kExchangeStride]) r |= 1u << i;
    return r;
}
inline int __any_sync(u32 mask, int pred) { return __ballot_sync(mask, pred) != 0; }
inline int __all_sync(u32 mask, int pred) { return __ballot_sync(mask, pred) == mask; }

// Fibers of one launch share one OS thread and are never preempted, so read-modify-write is atomic.
template <class T> inline T atomicAdd(T* p, T v) { T old = *p; *p = old + v; return old; }
inline float atomicMax(float* p, float v) { float old = *p; if (v > old) *p = v; return old; }
inline int atomicMax(int* p, int v) { int old = *p; if (v > old) *p = v; return old; }
inline u32 atomicOr(u32* p, u32 v) { u32 old = *p; *p = old | v; return old; }
inline int atomicCAS(int* p, int cmp, int v) { int old = *p; if (old == cmp) *p = v; return old; }
inline u32 atomicCAS(u32* p, u32 cmp, u32 v) { u32 old = *p; if (old == cmp) *p = v; return old; }

inline float __uint_as_float(u32 u) { float f; std::memcpy(&f, &u, 4); return f; }
inline u32 __float_as_uint(float f) { u32 u; std::memcpy(&u, &f, 4); return u; }
inline int __float_as_int(float f) { int u; std::memcpy(&u, &f, 4); return u; }
inline float __int_as_float(int u) { float f; std::memcpy(&f, &u, 4); return f; }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline i64 min(i64 a, i64 b) { return a < b ? a : b; }
inline i64 max(i64 a, i64 b) { return a > b ? a : b; }

template <class T> T* dynamic_smem() { return static_cast<T*>(emu::dynamic_shared()); }
inline u32 smem_address(const void* p) { return (u32)(uintptr_t)p; }
#define CD_EMU_YIELD()

template <int Bytes> inline void cp_async(void* smem_dst, const void* gmem_src)
{
#if __CUDA_ARCH__ >= 800
    emu::async_copy(smem_dst, gmem_src, Bytes);
#else
    std::memcpy(smem_dst, gmem_src, Bytes);
#endif
}
inline void cp_async_commit()
{
#if __CUDA_ARCH__ >= 800
    emu::async_commit();
#endif
}
template <int Pending> inline void cp_async_wait()
{
#if __CUDA_ARCH__ >= 800
    emu::async_wait(Pending);
#endif
}

// ---- tensor cores: the PTX per-lane fragment layouts of mma.m16n8k8 (see device.cuh) --------
namespace emu {
float f16_bits_to_float(u16 h);
float bf16_bits_to_float(u16 h);
// Gathers every lane's fragments, forms the 16x8x8 product in fp32 and hands each lane its part of
// D. elem: 0 f16, 1 bf16, 2 tf32.
void mma_m16n8k8(int elem, float d[4], const u32* a, int na, const u32* b, int nb, const float c[4]);
// mma.m16n8k16 (f16 elem 0, bf16 elem 1) with the fragment layouts of device.cuh.
void mma_m16n8k16(int elem, float d[4], const u32 a[4], const u32 b[2], const float c[4]);
// ldmatrix.m8n8.x<count>[.trans].b16: each lane that supplies a row (lanes < 8*count) reads its 16 bytes when it
// arrives (so a write to the rows not yet ordered before the collective shows), the rows are exchanged and each
// lane takes its registers by the PTX layout. A row address must be 16-byte aligned and inside the block's shared memory.
void ldmatrix(int count, bool trans, u32* r, const void* row);
} // namespace emu

inline void ldmatrix_x1(u32 r[1], const void* row) { emu::ldmatrix(1, false, r, row); }
inline void ldmatrix_x2(u32 r[2], const void* row) { emu::ldmatrix(2, false, r, row); }
inline void ldmatrix_x4(u32 r[4], const void* row) { emu::ldmatrix(4, false, r, row); }
inline void ldmatrix_x1_trans(u32 r[1], const void* row) { emu::ldmatrix(1, true, r, row); }
inline void ldmatrix_x2_trans(u32 r[2], const void* row) { emu::ldmatrix(2, true, r, row); }
inline void ldmatrix_x4_trans(u32 r[4], const void* row) { emu::ldmatrix(4, true, r, row); }
inline void cd_unreachable_on_this_arch(const char* why) { emu::fail("%s (emulated sm_%d)", why, __CUDA_ARCH__ / 10); }

inline void mma_m16n8k8_f16(float d[4], const u32 a[2], const u32 b[1], const float c[4]) { emu::mma_m16n8k8(0, d, a, 2, b, 1, c); }
#if __CUDA_ARCH__ >= 800
inline void mma_m16n8k8_bf16(float d[4], const u32 a[2], const u32 b[1], const float c[4]) { emu::mma_m16n8k8(1, d, a, 2, b, 1, c); }
inline void mma_m16n8k8_tf32(float d[4], const u32 a[4], const u32 b[2], const float c[4]) { emu::mma_m16n8k8(2, d, a, 4, b, 2, c); }
inline void mma_m16n8k16_f16_native(float d[4], const u32 a[4], const u32 b[2], const float c[4]) { emu::mma_m16n8k16(0, d, a, b, c); }
inline void mma_m16n8k16_bf16_native(float d[4], const u32 a[4], const u32 b[2], const float c[4]) { emu::mma_m16n8k16(1, d, a, b, c); }
// cvt.rna.tf32.f32: round to nearest, ties away from zero, keep 10 mantissa bits.
inline u32 to_tf32(float x)
{
    u32 u = __float_as_uint(x);
    if ((u & 0x7f800000u) == 0x7f800000u) return u;
    return (u + 0x1000u) & 0xffffe000u;
}
#endif

// ---- exported trampolines -------------------------------------------------------------------
namespace emu {
struct LaunchConfig { u32 grid[3]; u32 block[3]; u32 dynamic_shared_bytes; u32 flags; u64 seed; };
int run_grid(const char* name, const LaunchConfig* cfg, void (*thread_main)(void* ctx), void* ctx);

template <class... A, size_t... I>
void invoke_kernel(void (*kernel)(A...), void** args, std::index_sequence<I...>)
{
    kernel(*static_cast<std::remove_cv_t<std::remove_reference_t<A>>*>(args[I])...);
}

template <class... A> struct KernelCall { void (*kernel)(A...); void** args; };

template <class... A> void thread_main(void* p)
{
    auto* call = static_cast<KernelCall<A...>*>(p);
    invoke_kernel(call->kernel, call->args, std::index_sequence_for<A...>{});
}

template <class... A> int launch(const char* name, void (*kernel)(A...), const LaunchConfig* cfg, void** args)
{
    KernelCall<A...> call{kernel, args};
    return run_grid(name, cfg, &thread_main<A...>, &call);
}
} // namespace emu

#define CD_EXPORT(alias, ...)                                                                        \
    extern "C" __attribute__((visibility("default"))) int cdk_##alias(const ::emu::LaunchConfig* cfg, void** args) \
    {                                                                                                \
        return ::emu::launch(#alias, &__VA_ARGS__, cfg, args);                                       \
    }
