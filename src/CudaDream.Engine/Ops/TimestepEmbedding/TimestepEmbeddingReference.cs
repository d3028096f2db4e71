using System.Numerics;
using CudaDream.Engine.Backends.Cpu.Kernels;

namespace CudaDream.Engine.Ops;

/// <summary>
/// Sinusoidal timestep embedding as diffusers' get_timestep_embedding (the Transformer's positional
/// encoding, Vaswani et al. 2017 §3.5, applied to the diffusion timestep):
/// half = dim/2, freq_i = exp(−ln(maxPeriod)·i / (half − freqShift)), a_i = scale·t·freq_i,
/// emb = [sin a, cos a] ([cos a, sin a] when flipSinToCos; SD 1.5: flip = true, shift = 0), a zero
/// column appended when dim is odd. Computed in T in diffusers' order of operations, so float matches
/// PyTorch's float32 result to rounding. Forward only: the timestep is never trained.
/// </summary>
public static class TimestepEmbeddingReference
{
    public static void Forward<T>(int batch, int dim, ReadOnlySpan<T> timesteps, Span<T> embedding, bool flipSinToCos, T freqShift,
        T scale, T maxPeriod)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        KernelChecks.Positive(batch, nameof(batch));
        if (dim < 2) throw new ArgumentOutOfRangeException(nameof(dim), dim, "the embedding needs at least 2 columns");
        KernelChecks.Exact(timesteps.Length, batch, nameof(timesteps));
        KernelChecks.Exact(embedding.Length, (long)batch * dim, nameof(embedding));
        int half = dim / 2;
        if (T.CreateChecked(half) - freqShift == T.Zero) throw new ArgumentException("half − freqShift must not be zero", nameof(freqShift));
        T negLogPeriod = -T.Log(maxPeriod);
        for (int b = 0; b < batch; b++)
        {
            var row = embedding.Slice(b * dim, dim);
            for (int i = 0; i < half; i++)
            {
                T exponent = negLogPeriod * T.CreateChecked(i) / (T.CreateChecked(half) - freqShift);
                T arg = scale * (timesteps[b] * T.Exp(exponent));
                T sin = T.Sin(arg), cos = T.Cos(arg);
                row[i] = flipSinToCos ? cos : sin;
                row[half + i] = flipSinToCos ? sin : cos;
            }
            if (dim % 2 == 1) row[dim - 1] = T.Zero;
        }
    }

    /// <summary>SD 1.5's setting: flip_sin_to_cos = true, freq_shift = 0, scale 1, max_period 10000.</summary>
    public static void ForwardSd15<T>(int batch, int dim, ReadOnlySpan<T> timesteps, Span<T> embedding)
        where T : unmanaged, IFloatingPointIeee754<T> =>
        Forward(batch, dim, timesteps, embedding, flipSinToCos: true, T.Zero, T.One, T.CreateChecked(10000));
}
