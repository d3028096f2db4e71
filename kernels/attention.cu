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
