using System.Runtime.InteropServices;

namespace CudaDream.Engine.Backends;

// Mirrors of the structs kernels take by value (kernels/*.cu); field order and types must match.

/// <summary>device.cuh BroadcastShape: output shape and per-operand element strides (0 = broadcast).</summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct BroadcastShape
{
    public const int MaxRank = 6;
    public int Rank;
    public fixed int Shape[MaxRank];
    public fixed long StrideA[MaxRank];
    public fixed long StrideB[MaxRank];
}

/// <summary>elementwise.cu WhereShape: output shape and the strides of condition, a and b (0 = broadcast).</summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct WhereShape
{
    public int Rank;
    public fixed int Shape[BroadcastShape.MaxRank];
    /// <summary>[3][MaxRank]: condition, a, b.</summary>
    public fixed long Strides[3 * BroadcastShape.MaxRank];
}

/// <summary>layout.cu CopyGeometry: iteration shape and source/destination element strides.</summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct CopyGeometry
{
    public const int MaxRank = 8;
    public int Rank;
    public fixed int Shape[MaxRank];
    public fixed long SourceStride[MaxRank];
    public fixed long DestinationStride[MaxRank];
}

/// <summary>reduce.cu ReduceGeometry: where each output and each reduced element sits in the input.</summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct ReduceGeometry
{
    public int OutRank, ReducedRank;
    public fixed int OutShape[BroadcastShape.MaxRank];
    public fixed int ReducedShape[BroadcastShape.MaxRank];
    public fixed long OutStride[BroadcastShape.MaxRank];
    public fixed long ReducedStride[BroadcastShape.MaxRank];
    public long Count;
}

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
