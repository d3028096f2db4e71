using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using CudaDream.Engine.Backends.Cpu.Kernels;
using Xunit;
using Xunit.Abstractions;

namespace CudaDream.Engine.Tests.Cpu;

/// <summary>
/// The ISA matrix of <c>./build.sh test</c> reruns this namespace with <c>DOTNET_EnableAVX512=0</c> and with
/// <c>DOTNET_EnableAVX2=0</c>; this test proves each run really took the narrower kernels (so the GEMM, attention and
/// activation tests beside it checked that path against the references), and that a plain run takes the widest one.
/// </summary>
public class CpuSimdTests(ITestOutputHelper output)
{
    private static bool SwitchedOff(string isa) => Environment.GetEnvironmentVariable("DOTNET_Enable" + isa) == "0";

    [Fact]
    public void The_kernels_take_the_widest_vector_the_runtime_allows()
    {
        output.WriteLine($"CPU kernels: {CpuSimd.Description}");
        if (SwitchedOff("AVX2") || SwitchedOff("AVX") || SwitchedOff("HWIntrinsic"))
            Assert.Equal(Vector128.IsHardwareAccelerated ? SimdWidth.V128 : SimdWidth.Scalar, CpuSimd.Width);
        else if (SwitchedOff("AVX512"))
            Assert.Equal(Avx2.IsSupported && Fma.IsSupported ? SimdWidth.V256 : SimdWidth.V128, CpuSimd.Width);
        else if (Avx512F.IsSupported)
            Assert.Equal(SimdWidth.V512, CpuSimd.Width);
        else if (Avx2.IsSupported && Fma.IsSupported)
            Assert.Equal(SimdWidth.V256, CpuSimd.Width);
        else
            Assert.Equal(Vector128.IsHardwareAccelerated ? SimdWidth.V128 : SimdWidth.Scalar, CpuSimd.Width);
    }
}
