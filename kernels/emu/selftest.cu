// Planted bugs the emulator must catch (tests/CudaDream.Engine.Tests/Emu/EmuAdversarialTests).
// Built into the emulator libraries only; NVRTC never sees this file.
#include "../device.cuh"

// Each thread writes its value to shared memory and reads its neighbour's. `synchronized` = 0
// plants the race: no barrier between the write and the read.
__global__ void selftest_neighbour(const float* x, float* y, int n, int synchronized)
{
    CD_SHARED(float, s, 1024);
    const int i = threadIdx.x;
    s[i] = x[i];
    if (synchronized) __syncthreads();
    y[i] = s[(i + 1) % n];
}

// Writes one element past the end of y (n elements) when `overrun` is set.
__global__ void selftest_write(float* y, int n, int overrun)
{
    const int i = (int)global_thread_index();
    if (i < n + overrun) y[i] = 1.0f;
}

// Writes one element before the start of y when `underrun` is set.
__global__ void selftest_write_before(float* y, int n, int underrun)
{
    const int i = (int)global_thread_index() - underrun;
    if (i < n) y[i] = 2.0f;
}

// Thread 0 leaves early while the others wait at the barrier.
__global__ void selftest_barrier_divergence(float* y)
{
    if (threadIdx.x == 0) return;
    __syncthreads();
    y[threadIdx.x] = 1.0f;
}

// Reads the shared destination of a cp.async before (waited = 0) or after waiting for it.
__global__ void selftest_async_copy(const float* x, float* y, int waited)
{
    CD_SHARED(float, s, 256);
    cp_async<4>(&s[threadIdx.x], &x[threadIdx.x]);
    cp_async_commit();
    if (waited) cp_async_wait<0>();
    y[threadIdx.x] = s[threadIdx.x];
    if (!waited) cp_async_wait<0>();
}

CD_EXPORT(selftest_neighbour, selftest_neighbour)
CD_EXPORT(selftest_write, selftest_write)
CD_EXPORT(selftest_write_before, selftest_write_before)
CD_EXPORT(selftest_barrier_divergence, selftest_barrier_divergence)
CD_EXPORT(selftest_async_copy, selftest_async_copy)

// ---- Tensor-core fragments: a tile GEMM through mma.sync.m16n8k8 (f16, bf16, tf32), C[M,N] = A[M,K]·B[K,N],
// row-major fp32 in and out, inputs rounded to the fragment type. It checks device.cuh's per-lane fragment
// layouts as the emulator implements them (load, mma, store) against a reference GEMM; below sm_80 (no bf16/tf32
// mma) the same tile runs a scalar path. Launch: grid (N/8, M/16), block 32; M % 16 == N % 8 == K % 8 == 0.


enum MmaElem { MMA_F16 = 0, MMA_BF16 = 1, MMA_TF32 = 2 };

template <int E> CD_DEVICE u32 pack2(float lo, float hi) { return E == MMA_F16 ? pack_half2(lo, hi) : pack_bf162(lo, hi); }

template <int E> CD_DEVICE float round_input(float x)
{
    if (E == MMA_F16) return half_to_float(float_to_half(x));
    if (E == MMA_BF16) return bf16_to_float(float_to_bf16(x));
    // tf32: round to nearest, ties away from zero, 10 mantissa bits
    u32 u = float_to_bits(x);
    if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0x1000u) & 0xffffe000u;
    return bits_to_float(u);
}

template <int E>
__global__ void selftest_mma_gemm(const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C, int M, int N, int K)
{
    const int lane = lane_id(), g = lane >> 2, t = lane & 3;
    const int row0 = blockIdx.y * 16, col0 = blockIdx.x * 8;
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#if __CUDA_ARCH__ >= 800
    const bool tensor_cores = true;
#else
    const bool tensor_cores = E == MMA_F16;
#endif
    for (int k0 = 0; k0 < K; k0 += 8)
    {
        const float* a = A + (i64)row0 * K + k0;
        const float* b = B + (i64)k0 * N + col0;
        if (tensor_cores)
        {
            float d[4];
            if (E == MMA_TF32)
            {
#if __CUDA_ARCH__ >= 800
                u32 af[4] = {to_tf32(a[g * K + t]), to_tf32(a[(g + 8) * K + t]), to_tf32(a[g * K + t + 4]), to_tf32(a[(g + 8) * K + t + 4])};
                u32 bf[2] = {to_tf32(b[t * N + g]), to_tf32(b[(t + 4) * N + g])};
                mma_m16n8k8_tf32(d, af, bf, acc);
#endif
            }
            else
            {
                u32 af[2] = {pack2<E>(a[g * K + 2 * t], a[g * K + 2 * t + 1]), pack2<E>(a[(g + 8) * K + 2 * t], a[(g + 8) * K + 2 * t + 1])};
                u32 bf[1] = {pack2<E>(b[2 * t * N + g], b[(2 * t + 1) * N + g])};
#if __CUDA_ARCH__ >= 800
                if (E == MMA_BF16) mma_m16n8k8_bf16(d, af, bf, acc);
                else
#endif
                mma_m16n8k8_f16(d, af, bf, acc);
            }
            for (int r = 0; r < 4; r++) acc[r] = d[r];
        }
        else
        {
            for (int r = 0; r < 4; r++)
            {
                const int row = g + 8 * (r >> 1), col = 2 * t + (r & 1);
                for (int kk = 0; kk < 8; kk++) acc[r] = fmaf(round_input<E>(a[row * K + kk]), round_input<E>(b[kk * N + col]), acc[r]);
            }
        }
    }
    for (int r = 0; r < 4; r++)
    {
        const int row = row0 + g + 8 * (r >> 1), col = col0 + 2 * t + (r & 1);
        C[(i64)row * N + col] = acc[r];
    }
}

CD_EXPORT(selftest_mma_gemm_f16, selftest_mma_gemm<MMA_F16>)
CD_EXPORT(selftest_mma_gemm_bf16, selftest_mma_gemm<MMA_BF16>)
CD_EXPORT(selftest_mma_gemm_tf32, selftest_mma_gemm<MMA_TF32>)

// ---- ldmatrix and mma.sync.m16n8k16 (kernels/device.cuh), checked by EmuKernelTests ------------------------------
// selftest_ldmatrix: one warp; `rows` is 32 rows of 8 b16 values. Lane l supplies the address of row l (row l&7 of
// matrix l>>3) from shared memory with a 32-byte row pitch (rows not adjacent), runs ldmatrix .x<count> (.trans when
// `trans`) and writes its registers to out[4*l + i] (registers it did not receive keep 0xffffffff).
__global__ void selftest_ldmatrix(const u16* __restrict__ rows, u32* __restrict__ out, int count, int trans)
{
    CD_SHARED(u16, s, 32 * 16);
    const int lane = lane_id();
    for (int c = 0; c < 8; c++) s[lane * 16 + c] = rows[lane * 8 + c];
    __syncthreads();
    u32 r[4] = {0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu};
    const u16* mine = &s[lane * 16];
    if (count == 1) { if (trans) ldmatrix_x1_trans(r, mine); else ldmatrix_x1(r, mine); }
    else if (count == 2) { if (trans) ldmatrix_x2_trans(r, mine); else ldmatrix_x2(r, mine); }
    else { if (trans) ldmatrix_x4_trans(r, mine); else ldmatrix_x4(r, mine); }
    for (int i = 0; i < 4; i++) out[lane * 4 + i] = r[i];
}

// selftest_mma16_gemm_<f16|bf16>: C[M,N] (fp32) = A[M,K]·B[K,N], A and B row-major b16 bit patterns. One warp per
// 16x16 tile of C (grid (N/16, M/16), block 32); per 16-wide k step the A and B tiles go to shared memory, A
// fragments come from ldmatrix.x4 and B fragments (B is k-major, a "col" operand wants n-major) from ldmatrix.x4.trans,
// then two mma.m16n8k16. `planted_bug` plants a layout mistake the comparison must catch: 1 swaps the A registers a1
// and a2 (row g+8 vs column 2t+8), 2 loads B without .trans (a transposed fragment).
template <int E>
__global__ void selftest_mma16_gemm(const u16* __restrict__ A, const u16* __restrict__ B, float* __restrict__ C, int M, int N, int K, int planted_bug)
{
    const int Pitch = 24; // b16 per shared row: 48 bytes keeps every row 16-byte aligned
    CD_SHARED(u16, as, 16 * Pitch);
    CD_SHARED(u16, bs, 16 * Pitch);
    const int lane = lane_id(), g = lane >> 2, t = lane & 3;
    const int row0 = blockIdx.y * 16, col0 = blockIdx.x * 16;
    const int matrix = lane >> 3, row_in_matrix = lane & 7;
    float acc[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
    for (int k0 = 0; k0 < K; k0 += 16)
    {
        for (int e = lane; e < 256; e += 32)
        {
            const int r = e >> 4, c = e & 15;
            as[r * Pitch + c] = A[(i64)(row0 + r) * K + k0 + c];
            bs[r * Pitch + c] = B[(i64)(k0 + r) * N + col0 + c];
        }
        __syncthreads();
        // A: matrices (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7, k 8-15), (rows 8-15, k 8-15) = a0..a3.
        u32 a[4];
        ldmatrix_x4(a, &as[((matrix & 1) * 8 + row_in_matrix) * Pitch + (matrix >> 1) * 8]);
        if (planted_bug == 1) { const u32 x = a[1]; a[1] = a[2]; a[2] = x; }
        // B: matrices (k 0-7, n 0-7), (k 8-15, n 0-7), (k 0-7, n 8-15), (k 8-15, n 8-15) = b0, b1 of n-tile 0, then of n-tile 1.
        u32 b[4];
        const u16* brow = &bs[((matrix & 1) * 8 + row_in_matrix) * Pitch + (matrix >> 1) * 8];
        if (planted_bug == 2) ldmatrix_x4(b, brow);
        else ldmatrix_x4_trans(b, brow);
        for (int n = 0; n < 2; n++)
        {
            const u32 bn[2] = {b[2 * n], b[2 * n + 1]};
            float d[4];
            if (E == MMA_BF16) mma_m16n8k16_bf16(d, a, bn, acc[n]);
            else mma_m16n8k16_f16(d, a, bn, acc[n]);
            for (int r = 0; r < 4; r++) acc[n][r] = d[r];
        }
        __syncthreads();
    }
    for (int n = 0; n < 2; n++)
        for (int r = 0; r < 4; r++)
            C[(i64)(row0 + g + 8 * (r >> 1)) * N + col0 + 8 * n + 2 * t + (r & 1)] = acc[n][r];
}

CD_EXPORT(selftest_ldmatrix, selftest_ldmatrix)
CD_EXPORT(selftest_mma16_gemm_f16, selftest_mma16_gemm<MMA_F16>)
CD_EXPORT(selftest_mma16_gemm_bf16, selftest_mma16_gemm<MMA_BF16>)
