// Scaled dot-product attention, forward and backward, with online softmax (Milakov & Gimelshein
// 2018; FlashAttention-2, Dao 2023, Algorithms 1-2): no Nq x Nk matrix is ever stored. Any head
// width D works (the VAE's single 512-wide head included): per-warp rows of Q, dO and the
// accumulators live in dynamic shared memory, K/V (or Q/dO) tiles are staged with cp.async.
//
// Layout: element strides per (batch, head, row) for Q, K, V, O (and dO, dQ, dK, dV alike); the
// last axis is contiguous. So [B, N, H, D] and [B, H, N, D] views are both read in place.
// causal != 0 masks key j > query i (a flag, not a -inf constant). lse[b,h,i] = log sum exp.
//
// Launcher contract (KernelLaunchers.Attention*): W = warps per block (4 if D <= 256, else 2),
// block 32*W, one warp per query (or key) row; T = tile rows = clamp(2048 / D, 1, 32).
//   attention_forward_<t>(AttentionShape s, const T* q, const T* k, const T* v, T* o, float* lse, int tile)
//       grid (ceil(Nq/W), H, B), dynamic smem = (2*T*D + 2*W*D) floats
//   attention_backward_dot_<t>(AttentionShape s, const T* o, const T* dout, float* delta)
//       grid (ceil(Nq/W), H, B): delta[b,h,i] = dO_i . O_i (FlashAttention-2 eq. D_i)
//   attention_backward_dq_<t>(AttentionShape s, q, k, v, dout, lse, delta, T* dq, int tile)
//       grid (ceil(Nq/W), H, B), dynamic smem = (2*T*D + 3*W*D) floats
//   attention_backward_dkv_<t>(AttentionShape s, q, k, v, dout, lse, delta, T* dk, T* dv, int tile)
//       grid (ceil(Nk/W), H, B), dynamic smem = (2*T*D + 2*T + 4*W*D) floats
// dO/dQ/dK/dV use the strides of O/Q/K/V respectively.
//
// Narrow heads (D <= 32: CLIP, small UNets, VAE-sized single heads) use row-per-thread variants: one
// thread owns a query (or key) row in registers, the block stages K/V (or Q/dO) tiles in shared
// memory, and no warp collective is needed (a warp per row would leave most lanes idle at D = 8).
// Launcher contract: R = 128 threads per block, one row each; T = 64 tile rows; M = 16 or 32 >= D.
//   attention_rows_forward_d<M>_<t>(same arguments as attention_forward)
//       grid (ceil(Nq/R), H, B), dynamic smem = 2*T*D floats
//   attention_rows_backward_dot_<t>(same arguments as attention_backward_dot)      grid (ceil(Nq/R), H, B)
//   attention_rows_backward_dq_d<M>_<t>(same as attention_backward_dq)              grid (ceil(Nq/R), H, B), smem 2*T*D
//   attention_rows_backward_dkv_d<M>_<t>(same as attention_backward_dkv)            grid (ceil(Nk/R), H, B), smem 2*T*D + 2*T
//
// Tensor cores (bf16 on sm_80+, fp16 on sm_75+; FlashAttention-2 with mma.sync.m16n8k16, fp32 accumulation and softmax
// statistics): block 128 threads (4 warps x 16 rows), D % 8 == 0, D <= C for register class C (64, 80, 128, 160), tensors
// 16-byte aligned with strides that are multiples of 8 elements. P = pitch(D) = D, or D + 8 when D/8 is even (b16 units).
//   attention_mma_forward_d<C>_<t>(AttentionShape s, q, k, v, T* o, float* lse)
//       grid (ceil(Nq/64), H, B), key tile KT = 64 (C <= 80) or 32, dynamic smem = 4*KT*P*2 bytes
//   attention_mma_backward_dq_d<C>_<t>(same arguments as attention_backward_dq, no tile)
//       grid (ceil(Nq/64), H, B), key tile KT as the forward's, dynamic smem = 4*KT*P*2 bytes; delta from attention_backward_dot first
//   attention_mma_backward_dkv_d<C>_<t>(same arguments as attention_backward_dkv, no tile)    C = 64, 80
//       grid (ceil(Nk/64), H, B), query tile QT = 64 (C = 64) or 32, dynamic smem = max(2*(2*QT*P*2 + 2*QT*4), 2*64*P*2) bytes
//   attention_mma_backward_dkv_wide_d<C>_<t>(same arguments)                                   C = 128, 160
//       grid (ceil(Nk/32), H, B), block 64 threads (2 warps), query tile 16, dynamic smem = 2*32*P*2 + 2*(2*16*P*2 + 2*16*4) bytes
#include "device.cuh"

struct AttentionShape
{
    int batch, heads, q_len, kv_len, head_dim, causal;
    float scale;
    int pad_;
    i64 q_stride[3], k_stride[3], v_stride[3], o_stride[3]; // batch, head, row
};

CD_DEVICE i64 row_offset(const i64 st[3], int b, int h, int row) { return (i64)b * st[0] + (i64)h * st[1] + (i64)row * st[2]; }

// Stages rows [first, first+count) of a strided (b,h) matrix into smem[count][D] as fp32.
template <class T>
CD_DEVICE void stage_rows(float* smem, const T* src, const i64 st[3], int b, int h, int first, int count, int limit, int D)
{
    const int total = count * D;
    for (int e = threadIdx.x; e < total; e += blockDim.x)
    {
        const int r = e / D, d = e - r * D;
        if (first + r < limit)
        {
            const T* p = src + row_offset(st, b, h, first + r) + d;
            if (sizeof(T) == 4) cp_async<4>(&smem[e], p);
            else smem[e] = to_f32(*p);
        }
        else smem[e] = 0.0f;
    }
    cp_async_commit();
    cp_async_wait<0>();
}

// Keys (and values) a block of query rows [first_row, first_row + rows) attends to: all, or up to its
// last row when causal.
CD_DEVICE int keys_seen(const AttentionShape& s, int first_row, int rows)
{
    return s.causal ? min(s.kv_len, first_row + rows) : s.kv_len;
}

// Replaces the staged K/V tile by keys [j0, j0 + tile): barriers on both sides, so no thread still
// reads the previous tile and every thread sees the new one.
template <class T>
CD_DEVICE void stage_kv_tile(float* ks, float* vs, const T* k, const T* v, const AttentionShape& s, int b, int h, int j0, int tile)
{
    __syncthreads();
    stage_rows(ks, k, s.k_stride, b, h, j0, tile, s.kv_len, s.head_dim);
    stage_rows(vs, v, s.v_stride, b, h, j0, tile, s.kv_len, s.head_dim);
    __syncthreads();
}

// The dK/dV kernels' tile: query rows [i0, i0 + tile) of Q and dO, with their lse and delta.
template <class T>
CD_DEVICE void stage_q_tile(float* qs, float* dos, float* ls, float* ds, const T* q, const T* dout, const float* lse, const float* delta,
                            const AttentionShape& s, int b, int h, int i0, int tile)
{
    __syncthreads();
    stage_rows(qs, q, s.q_stride, b, h, i0, tile, s.q_len, s.head_dim);
    stage_rows(dos, dout, s.o_stride, b, h, i0, tile, s.q_len, s.head_dim);
    const i64 stat = ((i64)b * s.heads + h) * s.q_len;
    for (int e = threadIdx.x; e < tile; e += blockDim.x)
    {
        const bool in = i0 + e < s.q_len;
        ls[e] = in ? lse[stat + i0 + e] : 0.0f;
        ds[e] = in ? delta[stat + i0 + e] : 0.0f;
    }
    __syncthreads();
}

template <class T>
CD_DEVICE void load_row(float* dst, const T* src, int D)
{
    for (int d = lane_id(); d < D; d += CD_WARP) dst[d] = to_f32(src[d]);
}

// Warp-wide dot product of two shared/global fp32 rows.
CD_DEVICE float warp_dot(const float* a, const float* b, int D)
{
    float s = 0.0f;
    for (int d = lane_id(); d < D; d += CD_WARP) s += a[d] * b[d];
    return warp_sum(s);
}

template <class T>
__global__ void attention_forward(AttentionShape s, const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                                  T* __restrict__ o, float* __restrict__ lse, int tile)
{
    const int D = s.head_dim, W = blockDim.x / CD_WARP, w = warp_id();
    const int b = blockIdx.z, h = blockIdx.y, row = blockIdx.x * W + w;
    float* ks = dynamic_smem<float>();
    float* vs = ks + tile * D;
    float* qrow = vs + tile * D + w * D;
    float* acc = vs + tile * D + W * D + w * D;
    const bool active = row < s.q_len;
    if (active)
    {
        load_row(qrow, q + row_offset(s.q_stride, b, h, row), D);
        for (int d = lane_id(); d < D; d += CD_WARP) acc[d] = 0.0f;
    }
    float m = -3.402823466e38f, l = 0.0f;
    const int kv_end = keys_seen(s, blockIdx.x * W, W);
    for (int j0 = 0; j0 < kv_end; j0 += tile)
    {
        stage_kv_tile(ks, vs, k, v, s, b, h, j0, tile);
        if (!active) continue;
        const int jn = min(tile, s.kv_len - j0);
        for (int jj = 0; jj < jn; jj++)
        {
            if (s.causal && j0 + jj > row) break;
            const float score = warp_dot(qrow, ks + jj * D, D) * s.scale;
            const float m_new = fmaxf(m, score);
            const float corr = expf(m - m_new), p = expf(score - m_new);
            l = l * corr + p;
            for (int d = lane_id(); d < D; d += CD_WARP) acc[d] = acc[d] * corr + p * vs[jj * D + d];
            m = m_new;
        }
    }
    if (!active) return;
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    T* orow = o + row_offset(s.o_stride, b, h, row);
    for (int d = lane_id(); d < D; d += CD_WARP) orow[d] = from_f32<T>(acc[d] * inv);
    if (lane_id() == 0) lse[((i64)b * s.heads + h) * s.q_len + row] = l > 0.0f ? m + logf(l) : -3.402823466e38f;
}

template <class T>
__global__ void attention_backward_dot(AttentionShape s, const T* __restrict__ o, const T* __restrict__ dout, float* __restrict__ delta)
{
    const int W = blockDim.x / CD_WARP, b = blockIdx.z, h = blockIdx.y, row = blockIdx.x * W + warp_id();
    if (row >= s.q_len) return;
    const T* orow = o + row_offset(s.o_stride, b, h, row);
    const T* drow = dout + row_offset(s.o_stride, b, h, row);
    float acc = 0.0f;
    for (int d = lane_id(); d < s.head_dim; d += CD_WARP) acc += to_f32(orow[d]) * to_f32(drow[d]);
    acc = warp_sum(acc);
    if (lane_id() == 0) delta[((i64)b * s.heads + h) * s.q_len + row] = acc;
}

// dQ_i = scale * sum_j P_ij (dP_ij - delta_i) K_j, P_ij = exp(scale q_i.k_j - lse_i), dP_ij = dO_i.v_j
template <class T>
__global__ void attention_backward_dq(AttentionShape s, const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                                      const T* __restrict__ dout, const float* __restrict__ lse, const float* __restrict__ delta,
                                      T* __restrict__ dq, int tile)
{
    const int D = s.head_dim, W = blockDim.x / CD_WARP, w = warp_id();
    const int b = blockIdx.z, h = blockIdx.y, row = blockIdx.x * W + w;
    float* ks = dynamic_smem<float>();
    float* vs = ks + tile * D;
    float* qrow = vs + tile * D + w * D;
    float* drow = vs + tile * D + W * D + w * D;
    float* acc = vs + tile * D + 2 * W * D + w * D;
    const bool active = row < s.q_len;
    float L = 0.0f, Di = 0.0f;
    if (active)
    {
        load_row(qrow, q + row_offset(s.q_stride, b, h, row), D);
        load_row(drow, dout + row_offset(s.o_stride, b, h, row), D);
        for (int d = lane_id(); d < D; d += CD_WARP) acc[d] = 0.0f;
        const i64 st = ((i64)b * s.heads + h) * s.q_len + row;
        L = lse[st];
        Di = delta[st];
    }
    const int kv_end = keys_seen(s, blockIdx.x * W, W);
    for (int j0 = 0; j0 < kv_end; j0 += tile)
    {
        stage_kv_tile(ks, vs, k, v, s, b, h, j0, tile);
        if (!active) continue;
        const int jn = min(tile, s.kv_len - j0);
        for (int jj = 0; jj < jn; jj++)
        {
            if (s.causal && j0 + jj > row) break;
            const float p = expf(warp_dot(qrow, ks + jj * D, D) * s.scale - L);
            const float dp = warp_dot(drow, vs + jj * D, D);
            const float ds = p * (dp - Di) * s.scale;
            for (int d = lane_id(); d < D; d += CD_WARP) acc[d] += ds * ks[jj * D + d];
        }
    }
    if (!active) return;
    T* out = dq + row_offset(s.q_stride, b, h, row);
    for (int d = lane_id(); d < D; d += CD_WARP) out[d] = from_f32<T>(acc[d]);
}

// dV_j = sum_i P_ij dO_i ; dK_j = scale * sum_i P_ij (dP_ij - delta_i) q_i
template <class T>
__global__ void attention_backward_dkv(AttentionShape s, const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                                       const T* __restrict__ dout, const float* __restrict__ lse, const float* __restrict__ delta,
                                       T* __restrict__ dk, T* __restrict__ dv, int tile)
{
    const int D = s.head_dim, W = blockDim.x / CD_WARP, w = warp_id();
    const int b = blockIdx.z, h = blockIdx.y, col = blockIdx.x * W + w;
    float* qs = dynamic_smem<float>();
    float* dos = qs + tile * D;
    float* ls = dos + tile * D;      // lse of the staged query rows
    float* ds_ = ls + tile;          // delta of the staged query rows
    float* krow = ds_ + tile + w * D;
    float* vrow = ds_ + tile + W * D + w * D;
    float* dk_acc = ds_ + tile + 2 * W * D + w * D;
    float* dv_acc = ds_ + tile + 3 * W * D + w * D;
    const bool active = col < s.kv_len;
    if (active)
    {
        load_row(krow, k + row_offset(s.k_stride, b, h, col), D);
        load_row(vrow, v + row_offset(s.v_stride, b, h, col), D);
        for (int d = lane_id(); d < D; d += CD_WARP) { dk_acc[d] = 0.0f; dv_acc[d] = 0.0f; }
    }
    const int i_begin = s.causal ? ((int)blockIdx.x * W / tile) * tile : 0; // queries before the block's first key see none of it
    for (int i0 = i_begin; i0 < s.q_len; i0 += tile)
    {
        stage_q_tile(qs, dos, ls, ds_, q, dout, lse, delta, s, b, h, i0, tile);
        if (!active) continue;
        const int in_ = min(tile, s.q_len - i0);
        for (int ii = 0; ii < in_; ii++)
        {
            if (s.causal && i0 + ii < col) continue;
            const float p = expf(warp_dot(qs + ii * D, krow, D) * s.scale - ls[ii]);
            const float dp = warp_dot(dos + ii * D, vrow, D);
            const float dsc = p * (dp - ds_[ii]) * s.scale;
            for (int d = lane_id(); d < D; d += CD_WARP)
            {
                dv_acc[d] += p * dos[ii * D + d];
                dk_acc[d] += dsc * qs[ii * D + d];
            }
        }
    }
    if (!active) return;
    T* dko = dk + row_offset(s.k_stride, b, h, col);
    T* dvo = dv + row_offset(s.v_stride, b, h, col);
    for (int d = lane_id(); d < D; d += CD_WARP) { dko[d] = from_f32<T>(dk_acc[d]); dvo[d] = from_f32<T>(dv_acc[d]); }
}

// ------------------------------------------------------------------ row-per-thread variants
template <int M, class T> CD_DEVICE void load_row_registers(float (&dst)[M], const T* src, int D)
{
    for (int d = 0; d < M; d++) dst[d] = d < D ? to_f32(src[d]) : 0.0f;
}

template <int M> CD_DEVICE float row_dot(const float (&a)[M], const float* b, int D)
{
    float s = 0.0f;
    for (int d = 0; d < M; d++)
        if (d < D) s += a[d] * b[d];
    return s;
}

template <class T, int M>
__global__ void attention_rows_forward(AttentionShape s, const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                                       T* __restrict__ o, float* __restrict__ lse, int tile)
{
    const int D = s.head_dim, b = blockIdx.z, h = blockIdx.y, row = blockIdx.x * blockDim.x + threadIdx.x;
    float* ks = dynamic_smem<float>();
    float* vs = ks + tile * D;
    const bool active = row < s.q_len;
    float qr[M], acc[M];
    for (int d = 0; d < M; d++) { qr[d] = 0.0f; acc[d] = 0.0f; }
    if (active) load_row_registers(qr, q + row_offset(s.q_stride, b, h, row), D);
    float m = -3.402823466e38f, l = 0.0f;
    const int kv_end = keys_seen(s, blockIdx.x * blockDim.x, blockDim.x);
    for (int j0 = 0; j0 < kv_end; j0 += tile)
    {
        stage_kv_tile(ks, vs, k, v, s, b, h, j0, tile);
        if (!active) continue;
        const int jn = min(tile, s.kv_len - j0);
        for (int jj = 0; jj < jn; jj++)
        {
            if (s.causal && j0 + jj > row) break;
            const float score = row_dot(qr, ks + jj * D, D) * s.scale;
            const float m_new = fmaxf(m, score);
            const float corr = expf(m - m_new), p = expf(score - m_new);
            l = l * corr + p;
            for (int d = 0; d < M; d++)
                if (d < D) acc[d] = acc[d] * corr + p * vs[jj * D + d];
            m = m_new;
        }
    }
    if (!active) return;
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    T* orow = o + row_offset(s.o_stride, b, h, row);
    for (int d = 0; d < M; d++)
        if (d < D) orow[d] = from_f32<T>(acc[d] * inv);
    lse[((i64)b * s.heads + h) * s.q_len + row] = l > 0.0f ? m + logf(l) : -3.402823466e38f;
}

template <class T>
__global__ void attention_rows_backward_dot(AttentionShape s, const T* __restrict__ o, const T* __restrict__ dout, float* __restrict__ delta)
{
    const int b = blockIdx.z, h = blockIdx.y, row = blockIdx.x * blockDim.x + threadIdx.x;
    if (row >= s.q_len) return;
    const T* orow = o + row_offset(s.o_stride, b, h, row);
    const T* drow = dout + row_offset(s.o_stride, b, h, row);
    float acc = 0.0f;
    for (int d = 0; d < s.head_dim; d++) acc += to_f32(orow[d]) * to_f32(drow[d]);
    delta[((i64)b * s.heads + h) * s.q_len + row] = acc;
}

template <class T, int M>
__global__ void attention_rows_backward_dq(AttentionShape s, const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                                           const T* __restrict__ dout, const float* __restrict__ lse, const float* __restrict__ delta,
                                           T* __restrict__ dq, int tile)
{
    const int D = s.head_dim, b = blockIdx.z, h = blockIdx.y, row = blockIdx.x * blockDim.x + threadIdx.x;
    float* ks = dynamic_smem<float>();
    float* vs = ks + tile * D;
    const bool active = row < s.q_len;
    float qr[M], dor[M], acc[M];
    for (int d = 0; d < M; d++) { qr[d] = 0.0f; dor[d] = 0.0f; acc[d] = 0.0f; }
    float L = 0.0f, Di = 0.0f;
    if (active)
    {
        load_row_registers(qr, q + row_offset(s.q_stride, b, h, row), D);
        load_row_registers(dor, dout + row_offset(s.o_stride, b, h, row), D);
        const i64 st = ((i64)b * s.heads + h) * s.q_len + row;
        L = lse[st];
        Di = delta[st];
    }
    const int kv_end = keys_seen(s, blockIdx.x * blockDim.x, blockDim.x);
    for (int j0 = 0; j0 < kv_end; j0 += tile)
    {
        stage_kv_tile(ks, vs, k, v, s, b, h, j0, tile);
        if (!active) continue;
        const int jn = min(tile, s.kv_len - j0);
        for (int jj = 0; jj < jn; jj++)
        {
            if (s.causal && j0 + jj > row) break;
            const float p = expf(row_dot(qr, ks + jj * D, D) * s.scale - L);
            const float ds = p * (row_dot(dor, vs + jj * D, D) - Di) * s.scale;
            for (int d = 0; d < M; d++)
                if (d < D) acc[d] += ds * ks[jj * D + d];
        }
    }
    if (!active) return;
    T* out = dq + row_offset(s.q_stride, b, h, row);
    for (int d = 0; d < M; d++)
        if (d < D) out[d] = from_f32<T>(acc[d]);
}

template <class T, int M>
__global__ void attention_rows_backward_dkv(AttentionShape s, const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                                            const T* __restrict__ dout, const float* __restrict__ lse, const float* __restrict__ delta,
                                            T* __restrict__ dk, T* __restrict__ dv, int tile)
{
    const int D = s.head_dim, b = blockIdx.z, h = blockIdx.y, col = blockIdx.x * blockDim.x + threadIdx.x;
    float* qs = dynamic_smem<float>();
    float* dos = qs + tile * D;
    float* ls = dos + tile * D;
    float* ds_ = ls + tile;
    const bool active = col < s.kv_len;
    float kr[M], vr[M], dk_acc[M], dv_acc[M];
    for (int d = 0; d < M; d++) { kr[d] = 0.0f; vr[d] = 0.0f; dk_acc[d] = 0.0f; dv_acc[d] = 0.0f; }
    if (active)
    {
        load_row_registers(kr, k + row_offset(s.k_stride, b, h, col), D);
        load_row_registers(vr, v + row_offset(s.v_stride, b, h, col), D);
    }
    const int i_begin = s.causal ? ((int)(blockIdx.x * blockDim.x) / tile) * tile : 0;
    for (int i0 = i_begin; i0 < s.q_len; i0 += tile)
    {
        stage_q_tile(qs, dos, ls, ds_, q, dout, lse, delta, s, b, h, i0, tile);
        if (!active) continue;
        const int in_ = min(tile, s.q_len - i0);
        for (int ii = 0; ii < in_; ii++)
        {
            if (s.causal && i0 + ii < col) continue;
            const float p = expf(row_dot(kr, qs + ii * D, D) * s.scale - ls[ii]);
            const float dsc = p * (row_dot(vr, dos + ii * D, D) - ds_[ii]) * s.scale;
            for (int d = 0; d < M; d++)
                if (d < D)
                {
                    dv_acc[d] += p * dos[ii * D + d];
                    dk_acc[d] += dsc * qs[ii * D + d];
                }
        }
    }
    if (!active) return;
    T* dko = dk + row_offset(s.k_stride, b, h, col);
    T* dvo = dv + row_offset(s.v_stride, b, h, col);
    for (int d = 0; d < M; d++)
        if (d < D) { dko[d] = from_f32<T>(dk_acc[d]); dvo[d] = from_f32<T>(dv_acc[d]); }
}

// ------------------------------------------------------------------ tensor cores (FlashAttention-2)
// Storage types: a b16 element (half_t or bf16_t bits) packs two to a register, mma.m16n8k16 takes them.
template <class T> struct MmaStorage;
template <> struct MmaStorage<half_t>
{
    static CD_DEVICE u32 pack(float lo, float hi) { return pack_half2(lo, hi); }
    static CD_DEVICE void mma(float d[4], const u32 a[4], const u32 b[2], const float c[4]) { mma_m16n8k16_f16(d, a, b, c); }
};
template <> struct MmaStorage<bf16_t>
{
    static CD_DEVICE u32 pack(float lo, float hi) { return pack_bf162(lo, hi); }
    static CD_DEVICE void mma(float d[4], const u32 a[4], const u32 b[2], const float c[4]) { mma_m16n8k16_bf16(d, a, b, c); }
};

// Row pitch (b16 elements) of a staged tile. ldmatrix reads 8 rows of 16 bytes at once; they fall into distinct
// banks when the pitch is an odd number of 16-byte pieces, so an even count of pieces gets one more.
CD_DEVICE int mma_tile_pitch(int D) { return ((D / 8) & 1) ? D : D + 8; }

// Stages rows [first, first + rows) of a strided (b, h) b16 matrix into smem[rows][pitch] with 16-byte cp.async
// (D is a multiple of 8, rows start 16-byte aligned: the launcher checks); rows past `limit` become zeros so that a
// masked row contributes 0, never 0 times garbage. The caller commits.
template <class T>
CD_DEVICE void stage_b16_rows(u16* smem, const T* src, const i64 st[3], int b, int h, int first, int rows, int limit, int D, int pitch)
{
    const int pieces = D / 8;
    for (int e = threadIdx.x; e < rows * pieces; e += blockDim.x)
    {
        const int r = e / pieces, c = e - r * pieces;
        u16* dst = smem + r * pitch + c * 8;
        if (first + r < limit) cp_async<16>(dst, src + row_offset(st, b, h, first + r) + c * 8);
        else { uint4 z; z.x = z.y = z.z = z.w = 0u; *reinterpret_cast<uint4*>(dst) = z; }
    }
}

// Stages the fp32 statistics (lse, delta) of query rows [first, first + rows) of (b, h); zeros past q_len. The caller commits.
CD_DEVICE void stage_row_stats(float* smem, const float* src, const AttentionShape& s, int b, int h, int first, int rows)
{
    const i64 base = ((i64)b * s.heads + h) * s.q_len;
    for (int e = threadIdx.x; e < rows; e += blockDim.x)
    {
        if (first + e < s.q_len) cp_async<4>(&smem[e], &src[base + first + e]);
        else smem[e] = 0.0f;
    }
}

// One query tile of the dK/dV backward into a staging buffer, as one cp.async group: Q and dO rows (bf16/fp16, row
// pitch `pitch`), then lse and delta of those rows (fp32) behind them.
template <class T>
CD_DEVICE void stage_query_tile(u16* buf, const T* q, const T* dout, const float* lse, const float* delta, const AttentionShape& s,
                                int b, int h, int i0, int q_tile, int D, int pitch)
{
    float* stats = reinterpret_cast<float*>(buf + 2 * q_tile * pitch);
    stage_b16_rows(buf, q, s.q_stride, b, h, i0, q_tile, s.q_len, D, pitch);
    stage_b16_rows(buf + q_tile * pitch, dout, s.o_stride, b, h, i0, q_tile, s.q_len, D, pitch);
    stage_row_stats(stats, lse, s, b, h, i0, q_tile);
    stage_row_stats(stats + q_tile, delta, s, b, h, i0, q_tile);
    cp_async_commit();
}

// A fragments of mma.m16n8k16 for 16 rows of a staged tile (row-major, D wide): per 16-column k step one ldmatrix.x4 of
// the matrices (rows 0-7, cols 0-7), (rows 8-15, cols 0-7), (rows 0-7, cols 8-15), (rows 8-15, cols 8-15) = a0..a3.
// A last half step (D % 16 == 8) loads columns 0-7 only: a2 = a3 = 0 pad the k step in registers, never in memory.
template <int STEPS>
CD_DEVICE void load_a_fragments(u32 (&f)[STEPS][4], const u16* rows, int pitch, int D)
{
    const int lane = lane_id(), matrix = lane >> 3, row = lane & 7;
#pragma unroll
    for (int kk = 0; kk < STEPS; kk++)
    {
        f[kk][0] = f[kk][1] = f[kk][2] = f[kk][3] = 0u;
        if (kk * 16 >= D) continue;
        const u16* p = rows + ((matrix & 1) * 8 + row) * pitch + kk * 16;
        if (kk * 16 + 16 <= D) ldmatrix_x4(f[kk], p + (matrix >> 1) * 8);
        else ldmatrix_x2(f[kk], p);
    }
}

// acc (16 x 8·NT, fp32) += A · Bᵀ, A in fragments (16 x D), B the first 8·NT rows of a staged tile (D wide): the tile's rows
// are the n dimension. Per 16 rows one ldmatrix.x4 of (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15)
// gives b0, b1 of two n-tiles; a half k step loads k 0-7 only (.x2) and b1 = 0.
template <class T, int STEPS, int NT>
CD_DEVICE void mma_a_times_tile_t(float (&acc)[NT][4], const u32 (&a)[STEPS][4], const u16* tile, int pitch, int D)
{
    const int lane = lane_id(), matrix = lane >> 3, row = lane & 7;
#pragma unroll
    for (int kk = 0; kk < STEPS; kk++)
    {
        if (kk * 16 >= D) continue;
        const bool full = kk * 16 + 16 <= D;
#pragma unroll
        for (int n = 0; n < NT; n += 2)
        {
            u32 f[4];
            if (full)
            {
                ldmatrix_x4(f, tile + (n * 8 + (matrix >> 1) * 8 + row) * pitch + kk * 16 + (matrix & 1) * 8);
                const u32 b0[2] = {f[0], f[1]}, b1[2] = {f[2], f[3]};
                MmaStorage<T>::mma(acc[n], a[kk], b0, acc[n]);
                MmaStorage<T>::mma(acc[n + 1], a[kk], b1, acc[n + 1]);
            }
            else
            {
                ldmatrix_x2(f, tile + (n * 8 + (matrix & 1) * 8 + row) * pitch + kk * 16);
                const u32 b0[2] = {f[0], 0u}, b1[2] = {f[1], 0u};
                MmaStorage<T>::mma(acc[n], a[kk], b0, acc[n]);
                MmaStorage<T>::mma(acc[n + 1], a[kk], b1, acc[n + 1]);
            }
        }
    }
}

// acc (16 x 8·NT) += A · Bᵀ like mma_a_times_tile_t, but A's 16 rows stay in shared memory and their fragments are loaded
// per k step (for widths whose fragments would not fit in registers beside the accumulators).
template <class T, int STEPS, int NT>
CD_DEVICE void mma_rows_times_tile_t(float (&acc)[NT][4], const u16* a_rows, const u16* tile, int pitch, int D)
{
    const int lane = lane_id(), matrix = lane >> 3, row = lane & 7;
#pragma unroll
    for (int kk = 0; kk < STEPS; kk++)
    {
        if (kk * 16 >= D) continue;
        const bool full = kk * 16 + 16 <= D;
        u32 a[4] = {0u, 0u, 0u, 0u};
        const u16* ap = a_rows + ((matrix & 1) * 8 + row) * pitch + kk * 16;
        if (full) ldmatrix_x4(a, ap + (matrix >> 1) * 8);
        else ldmatrix_x2(a, ap);
#pragma unroll
        for (int n = 0; n < NT; n += 2)
        {
            u32 f[4];
            if (full)
            {
                ldmatrix_x4(f, tile + (n * 8 + (matrix >> 1) * 8 + row) * pitch + kk * 16 + (matrix & 1) * 8);
                const u32 b0[2] = {f[0], f[1]}, b1[2] = {f[2], f[3]};
                MmaStorage<T>::mma(acc[n], a, b0, acc[n]);
                MmaStorage<T>::mma(acc[n + 1], a, b1, acc[n + 1]);
            }
            else
            {
                ldmatrix_x2(f, tile + (n * 8 + (matrix & 1) * 8 + row) * pitch + kk * 16);
                const u32 b0[2] = {f[0], 0u}, b1[2] = {f[1], 0u};
                MmaStorage<T>::mma(acc[n], a, b0, acc[n]);
                MmaStorage<T>::mma(acc[n + 1], a, b1, acc[n + 1]);
            }
        }
    }
}

// acc (16 x D, fp32, n-tiles < o_tiles) += P · B, P (16 x 16·KSTEPS) given as fp32 accumulators and rounded to T here --
// the accumulators of n-tiles 2kk and 2kk+1 are exactly the A fragment of k step kk -- and B the first 16·KSTEPS rows of
// a staged tile (D wide): the tile's rows are the k dimension, so its fragments come through ldmatrix.trans, matrices
// (k 0-7, n 0-7), (k 8-15, n 0-7), (k 0-7, n 8-15), (k 8-15, n 8-15) = b0, b1 of two n-tiles (.x2 for a last odd one).
template <class T, int KSTEPS, int OT>
CD_DEVICE void mma_p_times_tile(float (&acc)[OT][4], const float (&p)[2 * KSTEPS][4], const u16* tile, int pitch, int o_tiles)
{
    const int lane = lane_id(), matrix = lane >> 3, row = lane & 7;
#pragma unroll
    for (int kk = 0; kk < KSTEPS; kk++)
    {
        const u32 pa[4] = {MmaStorage<T>::pack(p[2 * kk][0], p[2 * kk][1]), MmaStorage<T>::pack(p[2 * kk][2], p[2 * kk][3]),
                           MmaStorage<T>::pack(p[2 * kk + 1][0], p[2 * kk + 1][1]), MmaStorage<T>::pack(p[2 * kk + 1][2], p[2 * kk + 1][3])};
        const u16* rows = tile + (kk * 16 + (matrix & 1) * 8 + row) * pitch;
#pragma unroll
        for (int n = 0; n < OT; n += 2)
        {
            if (n >= o_tiles) continue;
            u32 f[4];
            if (n + 1 < o_tiles)
            {
                ldmatrix_x4_trans(f, rows + (n + (matrix >> 1)) * 8);
                const u32 b0[2] = {f[0], f[1]}, b1[2] = {f[2], f[3]};
                MmaStorage<T>::mma(acc[n], pa, b0, acc[n]);
                MmaStorage<T>::mma(acc[n + 1], pa, b1, acc[n + 1]);
            }
            else
            {
                ldmatrix_x2_trans(f, rows + n * 8);
                const u32 b0[2] = {f[0], f[1]};
                MmaStorage<T>::mma(acc[n], pa, b0, acc[n]);
            }
        }
    }
}

template <int NT> CD_DEVICE void zero_accumulators(float (&acc)[NT][4])
{
#pragma unroll
    for (int n = 0; n < NT; n++) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
}

// Writes the 16 x D accumulator rows of a warp (rows row0 + g and row0 + g + 8, scaled by scale[0] / scale[1]) in T.
template <class T, int OT>
CD_DEVICE void store_accumulator_rows(const float (&acc)[OT][4], T* base, const i64 st[3], int b, int h, int row0, int rows, int o_tiles,
                                      const float scale[2])
{
    const int lane = lane_id(), g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int i = 0; i < 2; i++)
    {
        const int row = row0 + g + 8 * i;
        if (row >= rows) continue;
        u32* out = reinterpret_cast<u32*>(base + row_offset(st, b, h, row));
#pragma unroll
        for (int n = 0; n < OT; n++)
            if (n < o_tiles) out[n * 4 + t] = MmaStorage<T>::pack(acc[n][2 * i] * scale[i], acc[n][2 * i + 1] * scale[i]);
    }
}

#define CD_LOG2E 1.4426950408889634f

// FlashAttention-2 forward (Dao 2023, Algorithm 1) on tensor cores. A block of 4 warps owns 64 query rows of one
// (batch, head), 16 per warp; key/value tiles of KV_TILE rows are double-buffered through cp.async (tile j+1 lands
// while tile j is multiplied). Per tile and warp: S = Q·Kᵀ by mma.m16n8k16 (Q fragments kept in registers for the
// whole kernel, K fragments by ldmatrix), fp32 online softmax statistics in registers (row max m and the lane's part
// of the row sum l, in the log2 domain so exp is one exp2), P rounded to the storage type in registers, and O += P·V
// with V fragments from ldmatrix.trans. DMAX bounds the head width D (D % 8 == 0, D <= DMAX) and sizes the register
// arrays; the loops over them are unrolled with runtime guards on D.
template <class T, int DMAX, int KV_TILE>
__global__ void __launch_bounds__(128, 1) attention_mma_forward(AttentionShape s, const T* __restrict__ q, const T* __restrict__ k,
                                                               const T* __restrict__ v, T* __restrict__ o, float* __restrict__ lse)
{
    constexpr int QK_STEPS = (DMAX + 15) / 16, O_TILES = DMAX / 8, S_TILES = KV_TILE / 8;
    const int D = s.head_dim, pitch = mma_tile_pitch(D), o_tiles = D / 8;
    const int b = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * 64;
    const int w = warp_id(), lane = lane_id(), g = lane >> 2, t = lane & 3;

    // Two buffers of a K tile then a V tile; buffer i by arithmetic, not a pointer array (which would live in local memory).
    u16* const smem = dynamic_smem<u16>();
    const int buffer_elems = 2 * KV_TILE * pitch;
    u16* const qs = smem + buffer_elems; // Q waits in buffer 1 until its fragments are in registers

    const int kv_end = s.causal ? min(s.kv_len, q0 + 64) : s.kv_len; // keys past the block's last row are all masked
    const int tiles = (kv_end + KV_TILE - 1) / KV_TILE;
    stage_b16_rows(qs, q, s.q_stride, b, h, q0, 64, s.q_len, D, pitch);
    cp_async_commit();
    stage_b16_rows(smem, k, s.k_stride, b, h, 0, KV_TILE, s.kv_len, D, pitch);
    stage_b16_rows(smem + KV_TILE * pitch, v, s.v_stride, b, h, 0, KV_TILE, s.kv_len, D, pitch);
    cp_async_commit();
    cp_async_wait<1>(); // Q has landed, tile 0 may still be in flight
    __syncthreads();
    u32 qf[QK_STEPS][4];
    load_a_fragments(qf, qs + w * 16 * pitch, pitch, D);
    __syncthreads(); // every warp holds its Q: buffer 1 may be refilled

    float acc[O_TILES][4];
    zero_accumulators(acc);
    float row_max[2] = {-CD_INFINITY, -CD_INFINITY}, row_sum[2] = {0.0f, 0.0f}; // rows g and g+8 of the warp
    const float scale_log2 = s.scale * CD_LOG2E;
    const int row_of[2] = {q0 + w * 16 + g, q0 + w * 16 + g + 8};

    for (int it = 0; it < tiles; it++)
    {
        const int j0 = it * KV_TILE;
        if (it + 1 < tiles)
        {
            u16* next = smem + ((it + 1) & 1) * buffer_elems;
            stage_b16_rows(next, k, s.k_stride, b, h, j0 + KV_TILE, KV_TILE, s.kv_len, D, pitch);
            stage_b16_rows(next + KV_TILE * pitch, v, s.v_stride, b, h, j0 + KV_TILE, KV_TILE, s.kv_len, D, pitch);
            cp_async_commit();
            cp_async_wait<1>();
        }
        else cp_async_wait<0>();
        __syncthreads(); // tile `it` visible to every warp
        const u16* ks = smem + (it & 1) * buffer_elems;
        const u16* vs = ks + KV_TILE * pitch;
        // Causal: a warp whose 16 rows all precede the tile's first key has nothing to add (warp-uniform branch).
        if (!s.causal || j0 <= q0 + w * 16 + 15)
        {
            float sc[S_TILES][4];
            zero_accumulators(sc);
            mma_a_times_tile_t<T>(sc, qf, ks, pitch, D);
            // Scale into the log2 domain and mask (keys past kv_len, and past the row when causal): a flag test, -inf.
            float tile_max[2] = {-CD_INFINITY, -CD_INFINITY};
#pragma unroll
            for (int n = 0; n < S_TILES; n++)
#pragma unroll
                for (int r = 0; r < 4; r++)
                {
                    const int key = j0 + n * 8 + 2 * t + (r & 1);
                    float x = sc[n][r] * scale_log2;
                    if (key >= s.kv_len || (s.causal && key > row_of[r >> 1])) x = -CD_INFINITY;
                    sc[n][r] = x;
                    tile_max[r >> 1] = fmaxf(tile_max[r >> 1], x);
                }
            float correction[2], base[2];
#pragma unroll
            for (int i = 0; i < 2; i++)
            {
                // the 4 lanes of a quad (same g) hold the row between them
                tile_max[i] = fmaxf(tile_max[i], __shfl_xor_sync(CD_FULL_MASK, tile_max[i], 1));
                tile_max[i] = fmaxf(tile_max[i], __shfl_xor_sync(CD_FULL_MASK, tile_max[i], 2));
                const float m_new = fmaxf(row_max[i], tile_max[i]);
                base[i] = m_new == -CD_INFINITY ? 0.0f : m_new; // a row with no key yet: exp2(-inf - 0) = 0, never NaN
                correction[i] = exp2f(row_max[i] - base[i]);
                row_max[i] = m_new;
                row_sum[i] *= correction[i];
            }
#pragma unroll
            for (int n = 0; n < S_TILES; n++)
#pragma unroll
                for (int r = 0; r < 4; r++)
                {
                    const float p = exp2f(sc[n][r] - base[r >> 1]);
                    row_sum[r >> 1] += p; // fp32 P: the normaliser is not rounded to the storage type
                    sc[n][r] = p;
                }
#pragma unroll
            for (int n = 0; n < O_TILES; n++)
#pragma unroll
                for (int r = 0; r < 4; r++) acc[n][r] *= correction[r >> 1];
            mma_p_times_tile<T, KV_TILE / 16>(acc, sc, vs, pitch, o_tiles);
        }
        __syncthreads(); // nobody reads buffer `it` any more: the next iteration refills it
    }

    float inv[2];
#pragma unroll
    for (int i = 0; i < 2; i++)
    {
        row_sum[i] += __shfl_xor_sync(CD_FULL_MASK, row_sum[i], 1);
        row_sum[i] += __shfl_xor_sync(CD_FULL_MASK, row_sum[i], 2);
        inv[i] = row_sum[i] > 0.0f ? 1.0f / row_sum[i] : 0.0f;
        const int row = row_of[i];
        if (row < s.q_len && t == 0)
            lse[((i64)b * s.heads + h) * s.q_len + row] = row_sum[i] > 0.0f ? row_max[i] / CD_LOG2E + logf(row_sum[i]) : -3.402823466e38f;
    }
    store_accumulator_rows<T>(acc, o, s.o_stride, b, h, q0 + w * 16, s.q_len, o_tiles, inv);
}

// FlashAttention-2 backward (Dao 2023, Algorithm 2) on tensor cores, as two kernels instead of one with atomic dQ
// updates: dQ blocks own query rows and walk the keys, dK/dV blocks own keys and walk the queries. Each recomputes
// P = exp(scale·Q·Kᵀ − lse) (one more Q·Kᵀ and dO·Vᵀ than Algorithm 2), but every gradient is summed in a fixed order
// (deterministic, as the fp32 kernels are) and no fp32 dQ scratch is needed. delta = rowsum(dO ∘ O) comes from
// attention_backward_dot. P and dS = P ∘ (dP − delta) are fp32 and rounded to the storage type only as mma operands.

// dQ = scale · dS · K for 64 query rows per block (4 warps of 16), key/value tiles of KV_TILE double-buffered.
template <class T, int DMAX, int KV_TILE>
__global__ void __launch_bounds__(128, 1) attention_mma_backward_dq(AttentionShape s, const T* __restrict__ q, const T* __restrict__ k,
                                                                   const T* __restrict__ v, const T* __restrict__ dout,
                                                                   const float* __restrict__ lse, const float* __restrict__ delta, T* __restrict__ dq)
{
    constexpr int QK_STEPS = (DMAX + 15) / 16, O_TILES = DMAX / 8, S_TILES = KV_TILE / 8;
    const int D = s.head_dim, pitch = mma_tile_pitch(D), o_tiles = D / 8;
    const int b = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * 64;
    const int w = warp_id(), lane = lane_id(), g = lane >> 2, t = lane & 3;
    u16* const smem = dynamic_smem<u16>();
    const int buffer_elems = 2 * KV_TILE * pitch;

    // Q and dO first (both buffers' room), into fragments; then the key/value pipeline.
    stage_b16_rows(smem, q, s.q_stride, b, h, q0, 64, s.q_len, D, pitch);
    stage_b16_rows(smem + 64 * pitch, dout, s.o_stride, b, h, q0, 64, s.q_len, D, pitch);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    u32 qf[QK_STEPS][4], dof[QK_STEPS][4];
    load_a_fragments(qf, smem + w * 16 * pitch, pitch, D);
    load_a_fragments(dof, smem + (64 + w * 16) * pitch, pitch, D);
    const int row_of[2] = {q0 + w * 16 + g, q0 + w * 16 + g + 8};
    float lse_log2[2], delta_of[2];
    const i64 stat = ((i64)b * s.heads + h) * s.q_len;
#pragma unroll
    for (int i = 0; i < 2; i++)
    {
        const bool in = row_of[i] < s.q_len;
        lse_log2[i] = in ? lse[stat + row_of[i]] * CD_LOG2E : 0.0f;
        delta_of[i] = in ? delta[stat + row_of[i]] : 0.0f;
    }
    __syncthreads(); // the fragments are in registers: the tiles may overwrite Q and dO

    const int kv_end = s.causal ? min(s.kv_len, q0 + 64) : s.kv_len;
    const int tiles = (kv_end + KV_TILE - 1) / KV_TILE;
    stage_b16_rows(smem, k, s.k_stride, b, h, 0, KV_TILE, s.kv_len, D, pitch);
    stage_b16_rows(smem + KV_TILE * pitch, v, s.v_stride, b, h, 0, KV_TILE, s.kv_len, D, pitch);
    cp_async_commit();
    float acc[O_TILES][4];
    zero_accumulators(acc);
    const float scale_log2 = s.scale * CD_LOG2E;
    for (int it = 0; it < tiles; it++)
    {
        const int j0 = it * KV_TILE;
        if (it + 1 < tiles)
        {
            u16* next = smem + ((it + 1) & 1) * buffer_elems;
            stage_b16_rows(next, k, s.k_stride, b, h, j0 + KV_TILE, KV_TILE, s.kv_len, D, pitch);
            stage_b16_rows(next + KV_TILE * pitch, v, s.v_stride, b, h, j0 + KV_TILE, KV_TILE, s.kv_len, D, pitch);
            cp_async_commit();
            cp_async_wait<1>();
        }
        else cp_async_wait<0>();
        __syncthreads();
        const u16* ks = smem + (it & 1) * buffer_elems;
        const u16* vs = ks + KV_TILE * pitch;
        if (!s.causal || j0 <= q0 + w * 16 + 15)
        {
            float p[S_TILES][4], dp[S_TILES][4];
            zero_accumulators(p);
            zero_accumulators(dp);
            mma_a_times_tile_t<T>(p, qf, ks, pitch, D);   // S = Q·Kᵀ
            mma_a_times_tile_t<T>(dp, dof, vs, pitch, D); // dP = dO·Vᵀ
#pragma unroll
            for (int n = 0; n < S_TILES; n++)
#pragma unroll
                for (int r = 0; r < 4; r++)
                {
                    const int key = j0 + n * 8 + 2 * t + (r & 1);
                    const bool masked = key >= s.kv_len || (s.causal && key > row_of[r >> 1]);
                    const float pr = masked ? 0.0f : exp2f(p[n][r] * scale_log2 - lse_log2[r >> 1]);
                    p[n][r] = pr * (dp[n][r] - delta_of[r >> 1]); // dS
                }
            mma_p_times_tile<T, KV_TILE / 16>(acc, p, ks, pitch, o_tiles); // dQ += dS·K
        }
        __syncthreads();
    }
    const float scale[2] = {s.scale, s.scale};
    store_accumulator_rows<T>(acc, dq, s.q_stride, b, h, q0 + w * 16, s.q_len, o_tiles, scale);
}

// dV = Pᵀ·dO and dK = scale · dSᵀ·Q for 64 keys per block (4 warps of 16), query tiles of Q_TILE rows (Q, dO and their
// lse, delta) double-buffered; everything is transposed, so the warp's 16 keys are the mma rows: Sᵀ = K·Qᵀ, dPᵀ = V·dOᵀ.
template <class T, int DMAX, int Q_TILE>
__global__ void __launch_bounds__(128, 1) attention_mma_backward_dkv(AttentionShape s, const T* __restrict__ q, const T* __restrict__ k,
                                                                    const T* __restrict__ v, const T* __restrict__ dout,
                                                                    const float* __restrict__ lse, const float* __restrict__ delta,
                                                                    T* __restrict__ dk, T* __restrict__ dv)
{
    constexpr int QK_STEPS = (DMAX + 15) / 16, O_TILES = DMAX / 8, S_TILES = Q_TILE / 8;
    const int D = s.head_dim, pitch = mma_tile_pitch(D), o_tiles = D / 8;
    const int b = blockIdx.z, h = blockIdx.y, k0 = blockIdx.x * 64;
    const int w = warp_id(), lane = lane_id(), g = lane >> 2, t = lane & 3;
    u16* const smem = dynamic_smem<u16>();
    // buffer i: Q tile, dO tile (Q_TILE x pitch b16 each), then lse and delta (Q_TILE floats each)
    const int buffer_elems = 2 * Q_TILE * pitch + 4 * Q_TILE;

    stage_b16_rows(smem, k, s.k_stride, b, h, k0, 64, s.kv_len, D, pitch);
    stage_b16_rows(smem + 64 * pitch, v, s.v_stride, b, h, k0, 64, s.kv_len, D, pitch);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    u32 kf[QK_STEPS][4], vf[QK_STEPS][4];
    load_a_fragments(kf, smem + w * 16 * pitch, pitch, D);
    load_a_fragments(vf, smem + (64 + w * 16) * pitch, pitch, D);
    const int key_of[2] = {k0 + w * 16 + g, k0 + w * 16 + g + 8};
    __syncthreads();

    const int i_begin = s.causal ? k0 / Q_TILE * Q_TILE : 0; // queries before the block's first key see none of it
    const int tiles = (s.q_len - i_begin + Q_TILE - 1) / Q_TILE;
    auto stage = [&](int it) {
        stage_query_tile(smem + (it & 1) * buffer_elems, q, dout, lse, delta, s, b, h, i_begin + it * Q_TILE, Q_TILE, D, pitch);
    };
    if (tiles > 0) stage(0);
    float dk_acc[O_TILES][4], dv_acc[O_TILES][4];
    zero_accumulators(dk_acc);
    zero_accumulators(dv_acc);
    const float scale_log2 = s.scale * CD_LOG2E;
    for (int it = 0; it < tiles; it++)
    {
        const int i0 = i_begin + it * Q_TILE;
        if (it + 1 < tiles) { stage(it + 1); cp_async_wait<1>(); }
        else cp_async_wait<0>();
        __syncthreads();
        const u16* qs = smem + (it & 1) * buffer_elems;
        const u16* dos = qs + Q_TILE * pitch;
        const float* lse_s = reinterpret_cast<const float*>(qs + 2 * Q_TILE * pitch);
        const float* delta_s = lse_s + Q_TILE;
        // Causal: a warp whose 16 keys all follow the tile's last query gets nothing from it.
        if (!s.causal || k0 + w * 16 <= i0 + Q_TILE - 1)
        {
            float p[S_TILES][4], dp[S_TILES][4];
            zero_accumulators(p);
            zero_accumulators(dp);
            mma_a_times_tile_t<T>(p, kf, qs, pitch, D);   // Sᵀ = K·Qᵀ
            mma_a_times_tile_t<T>(dp, vf, dos, pitch, D); // dPᵀ = V·dOᵀ
#pragma unroll
            for (int n = 0; n < S_TILES; n++)
#pragma unroll
                for (int r = 0; r < 4; r++)
                {
                    const int col = n * 8 + 2 * t + (r & 1), query = i0 + col;
                    const bool masked = query >= s.q_len || (s.causal && key_of[r >> 1] > query);
                    const float pr = masked ? 0.0f : exp2f(p[n][r] * scale_log2 - lse_s[col] * CD_LOG2E);
                    p[n][r] = pr;
                    dp[n][r] = pr * (dp[n][r] - delta_s[col]); // dSᵀ
                }
            mma_p_times_tile<T, Q_TILE / 16>(dv_acc, p, dos, pitch, o_tiles); // dV += Pᵀ·dO
            mma_p_times_tile<T, Q_TILE / 16>(dk_acc, dp, qs, pitch, o_tiles); // dK += dSᵀ·Q
        }
        __syncthreads();
    }
    const float one[2] = {1.0f, 1.0f}, scale[2] = {s.scale, s.scale};
    store_accumulator_rows<T>(dv_acc, dv, s.v_stride, b, h, k0 + w * 16, s.kv_len, o_tiles, one);
    store_accumulator_rows<T>(dk_acc, dk, s.k_stride, b, h, k0 + w * 16, s.kv_len, o_tiles, scale);
}

// dK/dV for heads wider than 80: two K, V fragment sets and two 16 x D fp32 accumulators would not fit in registers, so
// K and V stay in shared memory (their fragments are loaded per k step) and only the accumulators are registers. A block
// of 2 warps owns 32 keys (K and V, 2·32 rows, plus double-buffered 16-query tiles of Q, dO, lse and delta stay within
// 48 KiB at D = 160); per query tile the same products as attention_mma_backward_dkv.
template <class T, int DMAX>
__global__ void __launch_bounds__(64, 1) attention_mma_backward_dkv_wide(AttentionShape s, const T* __restrict__ q, const T* __restrict__ k,
                                                                        const T* __restrict__ v, const T* __restrict__ dout,
                                                                        const float* __restrict__ lse, const float* __restrict__ delta,
                                                                        T* __restrict__ dk, T* __restrict__ dv)
{
    constexpr int QK_STEPS = (DMAX + 15) / 16, O_TILES = DMAX / 8, Q_TILE = 16, S_TILES = Q_TILE / 8, KEYS = 32;
    const int D = s.head_dim, pitch = mma_tile_pitch(D), o_tiles = D / 8;
    const int b = blockIdx.z, h = blockIdx.y, k0 = blockIdx.x * KEYS;
    const int w = warp_id(), lane = lane_id(), g = lane >> 2, t = lane & 3;
    u16* const smem = dynamic_smem<u16>();
    const u16* const ks = smem;
    const u16* const vs = smem + KEYS * pitch;
    u16* const tiles_at = smem + 2 * KEYS * pitch;
    const int buffer_elems = 2 * Q_TILE * pitch + 4 * Q_TILE; // Q, dO tiles, then lse and delta (fp32)

    stage_b16_rows(smem, k, s.k_stride, b, h, k0, KEYS, s.kv_len, D, pitch);
    stage_b16_rows(smem + KEYS * pitch, v, s.v_stride, b, h, k0, KEYS, s.kv_len, D, pitch);
    cp_async_commit();
    const int key_of[2] = {k0 + w * 16 + g, k0 + w * 16 + g + 8};
    const int i_begin = s.causal ? k0 / Q_TILE * Q_TILE : 0;
    const int tiles = (s.q_len - i_begin + Q_TILE - 1) / Q_TILE;
    auto stage = [&](int it) {
        stage_query_tile(tiles_at + (it & 1) * buffer_elems, q, dout, lse, delta, s, b, h, i_begin + it * Q_TILE, Q_TILE, D, pitch);
    };
    if (tiles > 0) stage(0);
    float dk_acc[O_TILES][4], dv_acc[O_TILES][4];
    zero_accumulators(dk_acc);
    zero_accumulators(dv_acc);
    const float scale_log2 = s.scale * CD_LOG2E;
    for (int it = 0; it < tiles; it++)
    {
        const int i0 = i_begin + it * Q_TILE;
        if (it + 1 < tiles) { stage(it + 1); cp_async_wait<1>(); } // K, V and tile `it` have landed
        else cp_async_wait<0>();
        __syncthreads();
        const u16* qs = tiles_at + (it & 1) * buffer_elems;
        const u16* dos = qs + Q_TILE * pitch;
        const float* lse_s = reinterpret_cast<const float*>(qs + 2 * Q_TILE * pitch);
        const float* delta_s = lse_s + Q_TILE;
        if (!s.causal || k0 + w * 16 <= i0 + Q_TILE - 1)
        {
            float p[S_TILES][4], dp[S_TILES][4];
            zero_accumulators(p);
            zero_accumulators(dp);
            mma_rows_times_tile_t<T, QK_STEPS>(p, ks + w * 16 * pitch, qs, pitch, D);   // Sᵀ = K·Qᵀ
            mma_rows_times_tile_t<T, QK_STEPS>(dp, vs + w * 16 * pitch, dos, pitch, D); // dPᵀ = V·dOᵀ
#pragma unroll
            for (int n = 0; n < S_TILES; n++)
#pragma unroll
                for (int r = 0; r < 4; r++)
                {
                    const int col = n * 8 + 2 * t + (r & 1), query = i0 + col;
                    const bool masked = query >= s.q_len || (s.causal && key_of[r >> 1] > query);
                    const float pr = masked ? 0.0f : exp2f(p[n][r] * scale_log2 - lse_s[col] * CD_LOG2E);
                    p[n][r] = pr;
                    dp[n][r] = pr * (dp[n][r] - delta_s[col]); // dSᵀ
                }
            mma_p_times_tile<T, 1>(dv_acc, p, dos, pitch, o_tiles); // dV += Pᵀ·dO
            mma_p_times_tile<T, 1>(dk_acc, dp, qs, pitch, o_tiles); // dK += dSᵀ·Q
        }
        __syncthreads();
    }
    if (tiles == 0) cp_async_wait<0>(); // no query tile: K and V were never waited for
    const float one[2] = {1.0f, 1.0f}, scale[2] = {s.scale, s.scale};
    store_accumulator_rows<T>(dv_acc, dv, s.v_stride, b, h, k0 + w * 16, s.kv_len, o_tiles, one);
    store_accumulator_rows<T>(dk_acc, dk, s.k_stride, b, h, k0 + w * 16, s.kv_len, o_tiles, scale);
}

CD_EXPORT(attention_forward_f32, attention_forward<float>)
CD_EXPORT(attention_rows_forward_d16_f32, attention_rows_forward<float, 16>)
CD_EXPORT(attention_rows_forward_d32_f32, attention_rows_forward<float, 32>)
CD_EXPORT(attention_rows_backward_dot_f32, attention_rows_backward_dot<float>)
CD_EXPORT(attention_rows_backward_dq_d16_f32, attention_rows_backward_dq<float, 16>)
CD_EXPORT(attention_rows_backward_dq_d32_f32, attention_rows_backward_dq<float, 32>)
CD_EXPORT(attention_rows_backward_dkv_d16_f32, attention_rows_backward_dkv<float, 16>)
CD_EXPORT(attention_rows_backward_dkv_d32_f32, attention_rows_backward_dkv<float, 32>)
CD_EXPORT(attention_backward_dot_f32, attention_backward_dot<float>)
CD_EXPORT(attention_backward_dq_f32, attention_backward_dq<float>)
CD_EXPORT(attention_backward_dkv_f32, attention_backward_dkv<float>)
CD_EXPORT(attention_forward_bf16, attention_forward<bf16_t>)
CD_EXPORT(attention_forward_f16, attention_forward<half_t>)
CD_EXPORT(attention_rows_forward_d16_bf16, attention_rows_forward<bf16_t, 16>)
CD_EXPORT(attention_rows_forward_d16_f16, attention_rows_forward<half_t, 16>)
CD_EXPORT(attention_rows_forward_d32_bf16, attention_rows_forward<bf16_t, 32>)
CD_EXPORT(attention_rows_forward_d32_f16, attention_rows_forward<half_t, 32>)
CD_EXPORT(attention_rows_backward_dot_bf16, attention_rows_backward_dot<bf16_t>)
CD_EXPORT(attention_rows_backward_dot_f16, attention_rows_backward_dot<half_t>)
CD_EXPORT(attention_rows_backward_dq_d16_bf16, attention_rows_backward_dq<bf16_t, 16>)
CD_EXPORT(attention_rows_backward_dq_d16_f16, attention_rows_backward_dq<half_t, 16>)
CD_EXPORT(attention_rows_backward_dq_d32_bf16, attention_rows_backward_dq<bf16_t, 32>)
CD_EXPORT(attention_rows_backward_dq_d32_f16, attention_rows_backward_dq<half_t, 32>)
CD_EXPORT(attention_rows_backward_dkv_d16_bf16, attention_rows_backward_dkv<bf16_t, 16>)
CD_EXPORT(attention_rows_backward_dkv_d16_f16, attention_rows_backward_dkv<half_t, 16>)
CD_EXPORT(attention_rows_backward_dkv_d32_bf16, attention_rows_backward_dkv<bf16_t, 32>)
CD_EXPORT(attention_rows_backward_dkv_d32_f16, attention_rows_backward_dkv<half_t, 32>)
CD_EXPORT(attention_backward_dot_bf16, attention_backward_dot<bf16_t>)
CD_EXPORT(attention_backward_dot_f16, attention_backward_dot<half_t>)
CD_EXPORT(attention_backward_dq_bf16, attention_backward_dq<bf16_t>)
CD_EXPORT(attention_backward_dq_f16, attention_backward_dq<half_t>)
CD_EXPORT(attention_backward_dkv_bf16, attention_backward_dkv<bf16_t>)
CD_EXPORT(attention_backward_dkv_f16, attention_backward_dkv<half_t>)
// Register classes of the tensor-core forward (AttentionKernels.TensorCoreTiling picks one per head width):
// d64 (D <= 64) and d80 (64 < D <= 80) stage 64-key tiles; d128 and d160 stage 32-key tiles, which keeps the double
// buffer within 48 KiB of shared memory (4·tile·pitch·2 bytes) and leaves registers for the 16x160 fp32 accumulator.
CD_EXPORT(attention_mma_forward_d64_bf16, attention_mma_forward<bf16_t, 64, 64>)
CD_EXPORT(attention_mma_forward_d64_f16, attention_mma_forward<half_t, 64, 64>)
CD_EXPORT(attention_mma_forward_d80_bf16, attention_mma_forward<bf16_t, 80, 64>)
CD_EXPORT(attention_mma_forward_d80_f16, attention_mma_forward<half_t, 80, 64>)
CD_EXPORT(attention_mma_forward_d128_bf16, attention_mma_forward<bf16_t, 128, 32>)
CD_EXPORT(attention_mma_forward_d128_f16, attention_mma_forward<half_t, 128, 32>)
CD_EXPORT(attention_mma_forward_d160_bf16, attention_mma_forward<bf16_t, 160, 32>)
CD_EXPORT(attention_mma_forward_d160_f16, attention_mma_forward<half_t, 160, 32>)
// The tensor-core backward (AttentionKernels.TensorCoreBackwardTiling). d64, d80: dQ walks 64-key tiles like the forward;
// dK/dV keeps K, V fragments and both accumulators in registers and walks 64-query tiles (d64) or 32-query tiles (d80,
// whose 2x40 accumulator registers leave no room for a 64-wide S and dP).
CD_EXPORT(attention_mma_backward_dq_d64_bf16, attention_mma_backward_dq<bf16_t, 64, 64>)
CD_EXPORT(attention_mma_backward_dq_d64_f16, attention_mma_backward_dq<half_t, 64, 64>)
CD_EXPORT(attention_mma_backward_dq_d80_bf16, attention_mma_backward_dq<bf16_t, 80, 64>)
CD_EXPORT(attention_mma_backward_dq_d80_f16, attention_mma_backward_dq<half_t, 80, 64>)
CD_EXPORT(attention_mma_backward_dkv_d64_bf16, attention_mma_backward_dkv<bf16_t, 64, 64>)
CD_EXPORT(attention_mma_backward_dkv_d64_f16, attention_mma_backward_dkv<half_t, 64, 64>)
CD_EXPORT(attention_mma_backward_dkv_d80_bf16, attention_mma_backward_dkv<bf16_t, 80, 32>)
CD_EXPORT(attention_mma_backward_dkv_d80_f16, attention_mma_backward_dkv<half_t, 80, 32>)
// d128 and d160: dQ walks 32-key tiles like the forward; dK/dV keeps K and V in shared memory (attention_mma_backward_dkv_wide).
CD_EXPORT(attention_mma_backward_dq_d128_bf16, attention_mma_backward_dq<bf16_t, 128, 32>)
CD_EXPORT(attention_mma_backward_dq_d128_f16, attention_mma_backward_dq<half_t, 128, 32>)
CD_EXPORT(attention_mma_backward_dq_d160_bf16, attention_mma_backward_dq<bf16_t, 160, 32>)
CD_EXPORT(attention_mma_backward_dq_d160_f16, attention_mma_backward_dq<half_t, 160, 32>)
CD_EXPORT(attention_mma_backward_dkv_wide_d128_bf16, attention_mma_backward_dkv_wide<bf16_t, 128>)
CD_EXPORT(attention_mma_backward_dkv_wide_d128_f16, attention_mma_backward_dkv_wide<half_t, 128>)
CD_EXPORT(attention_mma_backward_dkv_wide_d160_bf16, attention_mma_backward_dkv_wide<bf16_t, 160>)
CD_EXPORT(attention_mma_backward_dkv_wide_d160_f16, attention_mma_backward_dkv_wide<half_t, 160>)
