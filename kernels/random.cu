// In-graph randomness from the counter-based generator (Randomness.CounterRng: Philox4x32-10, Salmon
// et al. SC'11), so cpu, emu and cuda draw the same numbers: RandomNormal(Like) and the counter-keyed
// dropout mask (CounterDropout; the same kernel on dy is its backward, nothing is stored).
// Keying (fixed forever, see CounterRng): key = (lo32(seed), hi32(seed)); counter = (lo32(block),
// hi32(block), (u32)step, purpose) with block = element / 4; element i takes word i % 4.
// seed and step are read from device memory (key[0] = seed, key[1] = step) so a captured graph replays
// with new values.
//
// Launcher contract (KernelLaunchers.RandomNormal/CounterDropout): 1-D grid-stride, block 256.
//   random_normal_f32(float* y, i64 n, const u64* key, u64 seed_xor, u32 purpose, float mean, float scale)
//       one thread per 4 elements: Box-Muller in double on (w0, w1) and (w2, w3), rounded once, then
//       y = mean + scale * z in fp32. The seed is key[0] ^ seed_xor (ONNX's per-node seed).
//   counter_dropout_<t>(const T* x, T* y, i64 n, const u64* key, float p, float keep, i64 stream)
//       u = (w >> 8) * 2^-24 of element (stream << 40) + i under purpose Dropout;
//       y = u < p ? 0 : x * keep (keep = 1/(1-p) rounded to fp32 on the host)
#include "device.cuh"

#define CD_PURPOSE_DROPOUT 3u

struct PhiloxWords { u32 w[4]; };

CD_DEVICE PhiloxWords philox4x32_10(u32 c0, u32 c1, u32 c2, u32 c3, u32 k0, u32 k1)
{
    for (int round = 0; round < 10; round++)
    {
        if (round > 0) { k0 += 0x9E3779B9u; k1 += 0xBB67AE85u; }
        const u64 p0 = (u64)0xD2511F53u * c0, p1 = (u64)0xCD9E8D57u * c2;
        const u32 n0 = (u32)(p1 >> 32) ^ c1 ^ k0, n2 = (u32)(p0 >> 32) ^ c3 ^ k1;
        c1 = (u32)p1;
        c3 = (u32)p0;
        c0 = n0;
        c2 = n2;
    }
    PhiloxWords r;
    r.w[0] = c0; r.w[1] = c1; r.w[2] = c2; r.w[3] = c3;
    return r;
}

CD_DEVICE PhiloxWords counter_block(u64 seed, u64 step, u32 purpose, i64 block)
{
    return philox4x32_10((u32)block, (u32)((u64)block >> 32), (u32)step, purpose, (u32)seed, (u32)(seed >> 32));
}

// (radius word, angle word) -> two standard normals, in double as CounterRng.BoxMullerPair.
CD_DEVICE void box_muller(u32 radius_word, u32 angle_word, float& z0, float& z1)
{
    const double two_pow_32_inv = 2.3283064365386963e-10;
    const double u = ((double)radius_word + 1.0) * two_pow_32_inv;
    const double radius = sqrt(-2.0 * log(u));
    const double theta = 2.0 * 3.141592653589793 * ((double)angle_word * two_pow_32_inv);
    z0 = (float)(radius * cos(theta));
    z1 = (float)(radius * sin(theta));
}

__global__ void random_normal_f32(float* __restrict__ y, i64 n, const u64* __restrict__ key, u64 seed_xor, u32 purpose, float mean, float scale)
{
    const u64 seed = key[0] ^ seed_xor, step = key[1];
    const i64 blocks = (n + 3) / 4;
    for (i64 b = global_thread_index(); b < blocks; b += global_thread_count())
    {
        const PhiloxWords r = counter_block(seed, step, purpose, b);
        float z[4];
        box_muller(r.w[0], r.w[1], z[0], z[1]);
        box_muller(r.w[2], r.w[3], z[2], z[3]);
        for (int lane = 0; lane < 4 && b * 4 + lane < n; lane++) y[b * 4 + lane] = mean + scale * z[lane];
    }
}

template <class T>
__global__ void counter_dropout(const T* __restrict__ x, T* __restrict__ y, i64 n, const u64* __restrict__ key, float p,
                                float keep, i64 stream)
{
    const u64 seed = key[0], step = key[1];
    for (i64 i = global_thread_index(); i < n; i += global_thread_count())
    {
        const i64 element = (stream << 40) + i;
        const u32 w = counter_block(seed, step, CD_PURPOSE_DROPOUT, element >> 2).w[element & 3];
        const float u = (float)(w >> 8) * 5.9604644775390625e-8f; // 2^-24
        y[i] = from_f32<T>(u < p ? 0.0f : to_f32(x[i]) * keep);
    }
}

CD_EXPORT(random_normal_f32, random_normal_f32)
CD_EXPORT(counter_dropout_f32, counter_dropout<float>)
CD_EXPORT(counter_dropout_bf16, counter_dropout<bf16_t>)
CD_EXPORT(counter_dropout_f16, counter_dropout<half_t>)
