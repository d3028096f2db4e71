using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace CudaDream.Engine.Backends.Cpu.Kernels;

/// <summary>The widest vector the fast CPU kernels use on this machine.</summary>
public enum SimdWidth
{
    /// <summary>No vector unit the JIT accelerates: scalar loops on the same packed data.</summary>
    Scalar,
    /// <summary>128-bit vectors: ARM64 AdvSimd (Apple Silicon, Graviton), or x64 with AVX switched off.</summary>
    V128,
    /// <summary>x64 AVX2 with FMA.</summary>
    V256,
    /// <summary>x64 AVX-512 (F): 512-bit FMAs.</summary>
    V512,
}

/// <summary>
/// Chooses the CPU kernels' vector width once per process from what the JIT reports, so every machine gets its
/// widest fast path and tests can force the narrower ones with the runtime's own switches (<c>DOTNET_EnableAVX512=0</c>,
/// <c>DOTNET_EnableAVX2=0</c>; .NET 10 spells the first without the F of earlier releases). AVX-512 is taken whenever
/// the ISA is there, even where <see cref="Vector512.IsHardwareAccelerated"/> would hold back for clock-throttling
/// reasons: a GEMM's FMAs gain more from the width than they lose to the clock. 128-bit paths use the cross-platform
/// <see cref="Vector128"/> operations, which the JIT maps to AdvSimd on ARM64 and to SSE on x64.
/// </summary>
public static class CpuSimd
{
    public static readonly SimdWidth Width =
        Avx512F.IsSupported ? SimdWidth.V512
        : Avx2.IsSupported && Fma.IsSupported ? SimdWidth.V256
        : Vector128.IsHardwareAccelerated ? SimdWidth.V128
        : SimdWidth.Scalar;

    /// <summary>For reports: "AVX-512", "AVX2+FMA", "AdvSimd (128-bit)", "SSE (128-bit)", "scalar".</summary>
    public static string Describe(SimdWidth width) => width switch
    {
        SimdWidth.V512 => "AVX-512",
        SimdWidth.V256 => "AVX2+FMA",
        SimdWidth.V128 => System.Runtime.Intrinsics.Arm.AdvSimd.IsSupported ? "AdvSimd (128-bit)" : "SSE (128-bit)",
        _ => "scalar",
    };

    public static string Description => Describe(Width);
}
