using System.Runtime.InteropServices;
using CudaDream.Engine.Backends;
using static CudaDream.Engine.Backends.KernelLaunchers;

namespace CudaDream.Engine.Training.Optimizers;

// Mirrors of the structs kernels/optimizer.cu takes by value; field order and types must match.

/// <summary>optimizer.cu ParamSlot: one tensor of a parameter group.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct ParamSlot
{
    public DevicePtr Param, Grad, M, V;
    public long Count;
}

/// <summary>optimizer.cu AdamWConfig (torch.optim.AdamW's per-step scalars).</summary>
[StructLayout(LayoutKind.Sequential)]
public record struct AdamWConfig(float Lr, float Beta1, float Beta2, float Eps, float WeightDecay, float BiasCorrection1, float BiasCorrection2, float GradScale = 1f)
{
    /// <summary>The scalars of optimizer step <paramref name="step"/> (1-based).</summary>
    public static AdamWConfig ForStep(int step, float lr, float beta1 = 0.9f, float beta2 = 0.999f, float eps = 1e-8f, float weightDecay = 1e-2f, float gradScale = 1f) =>
        new(lr, beta1, beta2, eps, weightDecay, 1f - MathF.Pow(beta1, step), 1f - MathF.Pow(beta2, step), gradScale);
}

/// <summary>optimizer.cu SgdConfig (torch.optim.SGD).</summary>
[StructLayout(LayoutKind.Sequential)]
public record struct SgdConfig(float Lr, float Momentum, float Dampening, float WeightDecay, float GradScale, int Nesterov, int FirstStep, int Pad = 0);

/// <summary>
/// Launchers of kernels/optimizer.cu (global gradient norm and clip, AdamW, SGD over a table of parameter
/// slots). Checked against the CPU optimizers on the emulator; the device-resident optimizer of [G1] runs them.
/// </summary>
public static class OptimizerKernels
{
    public const long OptimizerChunk = 65536;

    /// <summary>Chunks per tensor the optimizer kernels use for the largest of <paramref name="counts"/>.</summary>
    public static int OptimizerChunks(IEnumerable<long> counts) => (int)Math.Max(1, (counts.DefaultIfEmpty(1).Max() + OptimizerChunk - 1) / OptimizerChunk);

    /// <summary>
    /// Global gradient norm and clip coefficient into clipState [2] (norm, min(1, maxNorm/(norm+1e-6)));
    /// sets the int at <paramref name="nonfinite"/> when a gradient is NaN/Inf. partials: count·chunks floats.
    /// The caller zeroes <paramref name="nonfinite"/> once per step.
    /// </summary>
    public static void GradNorm(IKernelDevice d, DevicePtr slots, int count, int chunks, DevicePtr partials, DevicePtr clipState, DevicePtr nonfinite, float maxNorm, float gradScale = 1)
    {
        d.Launch("grad_norm_partial", new Dim3((uint)chunks, (uint)count), Block256, 0,
            new KernelArgs().Ptr(slots).I32(count).I64(OptimizerChunk).Ptr(partials).I32(chunks).Ptr(nonfinite));
        d.Launch("grad_norm_finalize", new Dim3(1), Block256, 0,
            new KernelArgs().Ptr(partials).I32(count * chunks).F32(maxNorm).F32(gradScale).Ptr(clipState));
    }

    public static void AdamWUpdate(IKernelDevice d, DevicePtr slots, int count, int chunks, in AdamWConfig cfg, DevicePtr clipState, DevicePtr nonfinite) =>
        d.Launch("adamw_update", new Dim3((uint)chunks, (uint)count), Block256, 0,
            new KernelArgs().Ptr(slots).I32(count).I64(OptimizerChunk).Value(cfg).Ptr(clipState).Ptr(nonfinite));

    public static void SgdUpdate(IKernelDevice d, DevicePtr slots, int count, int chunks, in SgdConfig cfg, DevicePtr clipState, DevicePtr nonfinite) =>
        d.Launch("sgd_update", new Dim3((uint)chunks, (uint)count), Block256, 0,
            new KernelArgs().Ptr(slots).I32(count).I64(OptimizerChunk).Value(cfg).Ptr(clipState).Ptr(nonfinite));
}
