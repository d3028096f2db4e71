using System.Runtime.InteropServices;
using CudaDream.Engine.Backends;
using static CudaDream.Engine.Backends.KernelLaunchers;

namespace CudaDream.Engine.Training.Optimizers;

// Mirrors of the structs kernels/optimizer.cu reads; field order and types must match.

/// <summary>optimizer.cu ParamSlot: one tensor of a parameter group (its gradient is the accumulated one).</summary>
[StructLayout(LayoutKind.Sequential)]
public struct ParamSlot
{
    public DevicePtr Param, Grad, M, V;
    public long Count;
}

/// <summary>optimizer.cu AccumulateSlot: a micro-step's gradient and the accumulator it is added to.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct AccumulateSlot
{
    public DevicePtr Accumulator, Gradient;
    public long Count;
}

/// <summary>optimizer.cu EmaSlot: a moving average and the parameter it follows.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct EmaSlot
{
    public DevicePtr Shadow, Param;
    public long Count;
}

/// <summary>optimizer.cu UpdateState: the device's per-update scalars, read back as the update's report (48 bytes).</summary>
[StructLayout(LayoutKind.Sequential)]
public struct UpdateState
{
    public float Loss, GradNorm, ClipCoefficient;
    public int Nonfinite;
    public float LossScale, GradScale;
    public int GoodSteps, Skipped, ErrorFlag, Pad0, Pad1, Pad2;

    public const int Bytes = 48;
    public static readonly long LossScaleOffset = Marshal.OffsetOf<UpdateState>(nameof(LossScale));
    public static readonly long GradNormOffset = Marshal.OffsetOf<UpdateState>(nameof(GradNorm));
    public static readonly long NonfiniteOffset = Marshal.OffsetOf<UpdateState>(nameof(Nonfinite));
}

/// <summary>optimizer.cu AdamWConfig: <see cref="AdamWScalars"/> (computed in float64 on the host, as the CPU's AdamW) and a gradient factor.</summary>
[StructLayout(LayoutKind.Sequential)]
public record struct AdamWConfig(float DecayFactor, float Beta1, float OneMinusBeta1, float Beta2, float OneMinusBeta2, float StepSize,
    float BiasCorrection2Sqrt, float Epsilon, float GradScale = 1f, int Pad0 = 0, int Pad1 = 0, int Pad2 = 0)
{
    public static AdamWConfig From(in AdamWScalars s, float gradScale = 1f) =>
        new(s.DecayFactor, s.Beta1, s.OneMinusBeta1, s.Beta2, s.OneMinusBeta2, s.StepSize, s.BiasCorrection2Sqrt, s.Epsilon, gradScale);
}

/// <summary>optimizer.cu SgdConfig (torch.optim.SGD; Keep = 1 − dampening, computed on the host as the CPU's SGD does).</summary>
[StructLayout(LayoutKind.Sequential)]
public record struct SgdConfig(float Lr, float Momentum, float Keep, float WeightDecay, float GradScale, int Nesterov, int FirstStep, int Pad = 0);

/// <summary>
/// Launchers of kernels/optimizer.cu: gradient accumulation, global gradient norm and clip, AdamW, SGD over tables of
/// parameter slots, fp16's loss scale and the update report. <see cref="DeviceOptimizer"/> runs them; each is checked
/// against the CPU optimizers on the emulator.
/// </summary>
public static class OptimizerKernels
{
    public const long OptimizerChunk = 65536;
    private static readonly Dim3 OneWarp = new(32);

    /// <summary>Chunks per tensor the optimizer kernels use for the largest of <paramref name="counts"/>.</summary>
    public static int OptimizerChunks(IEnumerable<long> counts) => (int)Math.Max(1, (counts.DefaultIfEmpty(1).Max() + OptimizerChunk - 1) / OptimizerChunk);

    public static void UpdateBegin(IKernelDevice d, DevicePtr state, float invMicroSteps) =>
        d.Launch("update_begin", new Dim3(1), OneWarp, 0, new KernelArgs().Ptr(state).F32(invMicroSteps));

    public static void LossAccumulate(IKernelDevice d, DevicePtr state, DevicePtr loss, float invMicroSteps) =>
        d.Launch("loss_accumulate", new Dim3(1), OneWarp, 0, new KernelArgs().Ptr(state).Ptr(loss).F32(invMicroSteps));

    public static void GradAccumulate(IKernelDevice d, DevicePtr slots, int count, int chunks, DevicePtr state, bool first) =>
        d.Launch("grad_accumulate", new Dim3((uint)chunks, (uint)count), Block256, 0,
            new KernelArgs().Ptr(slots).I32(count).I64(OptimizerChunk).Ptr(state).I32(first ? 1 : 0));

    public static void ErrorFlagsFirst(IKernelDevice d, DevicePtr flags, int count, int tag, DevicePtr state) =>
        d.Launch("error_flags_first", new Dim3(1), Block256, 0, new KernelArgs().Ptr(flags).I32(count).I32(tag).Ptr(state));

    /// <summary>
    /// Global gradient norm and clip coefficient into clipState [2] (norm, min(1, maxNorm/(norm+1e-6)));
    /// sets the int at <paramref name="nonfinite"/> when a gradient is NaN/Inf. partials: count·chunks floats.
    /// </summary>
    public static void GradNorm(IKernelDevice d, DevicePtr slots, int count, int chunks, DevicePtr partials, DevicePtr clipState, DevicePtr nonfinite, float maxNorm, float gradScale = 1)
    {
        d.Launch("grad_norm_partial", new Dim3((uint)chunks, (uint)count), Block256, 0,
            new KernelArgs().Ptr(slots).I32(count).I64(OptimizerChunk).Ptr(partials).I32(chunks).Ptr(nonfinite));
        d.Launch("grad_norm_finalize", new Dim3(1), Block256, 0,
            new KernelArgs().Ptr(partials).I32(count * chunks).F32(maxNorm).F32(gradScale).Ptr(clipState));
    }

    /// <param name="config">An <see cref="AdamWConfig"/> in device memory (staged per update).</param>
    public static void AdamWUpdate(IKernelDevice d, DevicePtr slots, int count, int chunks, DevicePtr config, DevicePtr clipState, DevicePtr nonfinite) =>
        d.Launch("adamw_update", new Dim3((uint)chunks, (uint)count), Block256, 0,
            new KernelArgs().Ptr(slots).I32(count).I64(OptimizerChunk).Ptr(config).Ptr(clipState).Ptr(nonfinite));

    /// <param name="config">An <see cref="SgdConfig"/> in device memory (staged per update).</param>
    public static void SgdUpdate(IKernelDevice d, DevicePtr slots, int count, int chunks, DevicePtr config, DevicePtr clipState, DevicePtr nonfinite) =>
        d.Launch("sgd_update", new Dim3((uint)chunks, (uint)count), Block256, 0,
            new KernelArgs().Ptr(slots).I32(count).I64(OptimizerChunk).Ptr(config).Ptr(clipState).Ptr(nonfinite));

    public static void EmaUpdate(IKernelDevice d, DevicePtr slots, int count, int chunks, DevicePtr oneMinusDecay, DevicePtr nonfinite) =>
        d.Launch("ema_update", new Dim3((uint)chunks, (uint)count), Block256, 0,
            new KernelArgs().Ptr(slots).I32(count).I64(OptimizerChunk).Ptr(oneMinusDecay).Ptr(nonfinite));

    public static void LossScaleUpdate(IKernelDevice d, DevicePtr state, int growthInterval, float growth, float backoff) =>
        d.Launch("loss_scale_update", new Dim3(1), OneWarp, 0, new KernelArgs().Ptr(state).I32(growthInterval).F32(growth).F32(backoff));
}
