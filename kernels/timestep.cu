// Sinusoidal timestep embedding (diffusers' get_timestep_embedding; the Transformer positional
// encoding of Vaswani et al. 2017 §3.5 applied to the diffusion timestep), forward only: the timestep
// is never trained. half = dim/2, freq_i = exp(-ln(max_period) * i / (half - shift)),
// a_i = scale * t * freq_i, row = [sin a, cos a] ([cos a, sin a] when flip), a zero column when dim is
// odd. The fp32 operations follow TimestepEmbeddingReference in order; exp, sin and cos are evaluated
// in double and rounded once, so the result is the correctly rounded fp32 value on every device (a
// GPU's expf is off by up to 2 ulp, which t = 999 turns into 1e-4 of the argument).
//
// Launcher contract (KernelLaunchers.TimestepEmbedding): 1-D grid-stride, block 256.
//   timestep_embedding_f32(const float* t, float* y, int batch, int dim, int flip, float shift, float scale, float max_period)
#include "device.cuh"

__global__ void timestep_embedding_f32(const float* __restrict__ t, float* __restrict__ y, int batch, int dim, int flip, float shift,
                                       float scale, float max_period)
{
    const int half = dim / 2;
    const float neg_log_period = -(float)log((double)max_period);
    const i64 n = (i64)batch * dim;
    for (i64 o = global_thread_index(); o < n; o += global_thread_count())
    {
        const int b = (int)(o / dim), col = (int)(o - (i64)b * dim);
        if (col >= 2 * half) { y[o] = 0.0f; continue; }
        const int i = col < half ? col : col - half;
        const float exponent = neg_log_period * (float)i / ((float)half - shift);
        const float arg = scale * (t[b] * (float)exp((double)exponent));
        const bool first_half = col < half;
        const bool use_cos = first_half == (flip != 0);
        y[o] = use_cos ? (float)cos((double)arg) : (float)sin((double)arg);
    }
}

CD_EXPORT(timestep_embedding_f32, timestep_embedding_f32)
