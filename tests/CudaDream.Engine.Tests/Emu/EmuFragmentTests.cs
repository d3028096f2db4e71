using CudaDream.Engine.Backends;
using CudaDream.Engine.Backends.Cpu.Kernels;
using CudaDream.Engine.Backends.Emu;
using CudaDream.Engine.Ops;
using CudaDream.TestSupport;
using Xunit;

namespace CudaDream.Engine.Tests.Emu;

/// <summary>
/// ldmatrix and mma.sync.m16n8k16 of kernels/device.cuh as the emulator implements them (kernels/emu/selftest.cu):
/// the per-lane registers of every ldmatrix form against the PTX ISA's layout written out here, a tile GEMM through
/// ldmatrix + m16n8k16 against a CPU matrix product, and planted layout mistakes that the product comparison catches.
/// </summary>
public class EmuFragmentTests
{
    public static IEnumerable<object[]> LdmatrixCases() =>
        from tier in EmuLibrary.Tiers from count in new[] { 1, 2, 4 } from trans in new[] { false, true } select new object[] { tier, count, trans };

    /// <summary>
    /// PTX ISA, ldmatrix: lane l receives register i of matrix i (rows supplied by lanes 8i..8i+7); without .trans
    /// the elements (row l/4, columns 2(l%4), 2(l%4)+1), with .trans (rows 2(l%4), 2(l%4)+1, column l/4); the first
    /// element in the low 16 bits.
    /// </summary>
    [Theory, MemberData(nameof(LdmatrixCases))]
    public void Ldmatrix_hands_each_lane_the_ptx_layout(int tier, int count, bool trans)
    {
        using var s = new EmuSession(tier);
        // 32 rows of 8 distinct values: row r, column c holds 0x100·r + c + 1.
        var rows = new ushort[32 * 8];
        for (int r = 0; r < 32; r++)
            for (int c = 0; c < 8; c++) rows[r * 8 + c] = (ushort)(0x100 * r + c + 1);
        var outp = s.Upload(new uint[32 * 4]);
        s.Device.Launch("selftest_ldmatrix", new Dim3(1), new Dim3(32), 0, new KernelArgs().Ptr(s.Upload(rows)).Ptr(outp).I32(count).I32(trans ? 1 : 0));
        var got = DownloadUInts(s, outp, 32 * 4);
        for (int lane = 0; lane < 32; lane++)
            for (int i = 0; i < 4; i++)
            {
                uint expected = 0xffffffffu;
                if (i < count)
                {
                    int g = lane / 4, t = lane % 4;
                    (int r0, int c0, int r1, int c1) = trans ? (2 * t, g, 2 * t + 1, g) : (g, 2 * t, g, 2 * t + 1);
                    expected = rows[(8 * i + r0) * 8 + c0] | (uint)rows[(8 * i + r1) * 8 + c1] << 16;
                }
                Assert.True(expected == got[lane * 4 + i], $"x{count}{(trans ? ".trans" : "")} lane {lane} register {i}: {got[lane * 4 + i]:x8}, PTX layout says {expected:x8}");
            }
    }

    public static IEnumerable<object[]> GemmCases() =>
        from tier in EmuLibrary.Tiers from elem in new[] { "f16", "bf16" } select new object[] { tier, elem };

    [Theory, MemberData(nameof(GemmCases))]
    public void Mma_m16n8k16_tile_gemm_through_ldmatrix_matches_the_cpu_product(int tier, string elem)
    {
        using var s = new EmuSession(tier);
        var (a, b, cRef, M, N, K) = Problem(elem);
        if (elem == "bf16" && tier < 800)
        {   // no bf16 mma below sm_80: the kernel stops with a message rather than computing anything
            var e = Assert.Throws<EmuKernelException>(() => Run(s, elem, a, b, M, N, K, plantedBug: 0));
            Assert.Contains("sm_80", e.Message);
            return;
        }
        var c = Run(s, elem, a, b, M, N, K, plantedBug: 0);
        // Products of rounded inputs are exact in fp32 and only the k-sum rounds: fp32 accumulation noise.
        TensorAssert.Close(cRef, c, 1e-5, $"mma m16n8k16 {elem} sm_{tier / 10}");
    }

    [Theory, InlineData(1, "f16"), InlineData(2, "f16"), InlineData(1, "bf16"), InlineData(2, "bf16")]
    public void A_planted_fragment_layout_bug_fails_the_comparison(int plantedBug, string elem)
    {
        using var s = new EmuSession(800);
        var (a, b, cRef, M, N, K) = Problem(elem);
        var c = Run(s, elem, a, b, M, N, K, plantedBug);
        double error = TensorAssert.RelativeMaxError(c, cRef);
        Assert.True(error > 0.1, $"planted bug {plantedBug} ({(plantedBug == 1 ? "a1/a2 swapped" : "B fragment transposed")}) gave error {error:E2}, indistinguishable from a correct layout");
    }

    private static (ushort[] A, ushort[] B, float[] CRef, int M, int N, int K) Problem(string elem)
    {
        const int M = 32, N = 32, K = 48;
        Func<float, ushort> bits = elem == "f16" ? v => BitConverter.HalfToUInt16Bits((Half)v) : Tensors.BFloat16.FromSingle;
        Func<ushort, float> value = elem == "f16" ? h => (float)BitConverter.UInt16BitsToHalf(h) : Tensors.BFloat16.ToSingle;
        var a = EmuSession.Random(M * K, 41).Select(bits).ToArray();
        var b = EmuSession.Random(K * N, 42).Select(bits).ToArray();
        var cRef = new float[M * N];
        GemmReference.Gemm<float>(false, false, M, N, K, 1f, a.Select(value).ToArray(), K, b.Select(value).ToArray(), N, 0f, cRef, N);
        return (a, b, cRef, M, N, K);
    }

    private static float[] Run(EmuSession s, string elem, ushort[] a, ushort[] b, int M, int N, int K, int plantedBug)
    {
        var c = s.Output(M * N);
        s.Device.Launch("selftest_mma16_gemm_" + elem, new Dim3((uint)(N / 16), (uint)(M / 16)), new Dim3(32), 0,
            new KernelArgs().Ptr(s.Upload(a)).Ptr(s.Upload(b)).Ptr(c).I32(M).I32(N).I32(K).I32(plantedBug));
        return s.Download(c, M * N);
    }

    private static uint[] DownloadUInts(EmuSession s, DevicePtr p, int n) =>
        s.Download(p, n).Select(BitConverter.SingleToUInt32Bits).ToArray();
}
