using CudaDream.Engine.Backends.Cpu.Kernels;
using CudaDream.Engine.Tensors;

namespace CudaDream.Engine.Backends;

public static partial class KernelLaunchers
{
    // ------------------------------------------------------------------ optimizer.cu
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
