using CudaDream.Engine.Backends;
using CudaDream.Engine.Backends.Emu;
using CudaDream.Engine.Ops;
using CudaDream.Engine.Tensors;
using CudaDream.TestSupport;
using Xunit;
using Xunit.Abstractions;

namespace CudaDream.Engine.Tests.Emu;

/// <summary>
/// The FlashAttention-2 tensor-core kernels of kernels/attention.cu on the emulator against the CPU fp32 reference
/// (AttentionReference on the inputs as stored, i.e. rounded to bf16/fp16): outputs within DESIGN.md's per-op bounds
/// (bf16 2e-2·max|ref|, fp16 5e-3·max|ref|), the fp32 log-sum-exp within the fp32 bound 1e-4·max|ref|.
/// </summary>
public class EmuAttentionTensorCoreTests(ITestOutputHelper output)
{
    /// <summary>DESIGN.md, "Numbers the engine is held to": per-op bounds of reduced-precision storage.</summary>
    private static double StorageBound(DType t) => t == DType.BF16 ? 2e-2 : 5e-3;
    private const double Fp32Bound = 1e-4;

    public static IEnumerable<object[]> SdWidthCases() =>
        from d in new[] { 40, 64, 80, 160 }
        from c in new[] { ("bf16", 800), ("bf16", 900), ("f16", 750), ("f16", 800) }
        select new object[] { d, c.Item1, c.Item2 };

    /// <summary>
    /// SD 1.5's head widths (40, 80, 160) and 64, batch 2, 2 heads, a ragged query count (64 + 17): cross-attention with 77
    /// keys (a full and a partial key tile), self-attention with Nk = Nq, and causal self-attention.
    /// </summary>
    [Theory, MemberData(nameof(SdWidthCases))]
    public void Forward_matches_the_fp32_reference(int headDim, string type, int tier)
    {
        var t = type == "bf16" ? DType.BF16 : DType.F16;
        foreach (var (nk, causal) in new[] { (77, false), (81, false), (81, true) })
            Check(tier, t, AttentionShape.Create(2, 81, nk, 2, headDim, causal), AttentionForwardKernel.TensorCore, auto: true);
    }

    public static IEnumerable<object[]> OtherWidthCases() =>
        from d in new[] { 8, 24, 48, 72, 96, 128, 136 } select new object[] { d };

    /// <summary>Every register class and a half k step (D % 16 == 8) at widths the launcher picks other kernels for by default (8, 24).</summary>
    [Theory, MemberData(nameof(OtherWidthCases))]
    public void Kernel_takes_every_multiple_of_8_up_to_160(int headDim)
    {
        Check(800, DType.BF16, AttentionShape.Create(1, 70, 77, 2, headDim), AttentionForwardKernel.TensorCore, auto: false);
        Check(800, DType.F16, AttentionShape.Create(1, 33, 33, 1, headDim, causal: true), AttentionForwardKernel.TensorCore, auto: false);
    }

    /// <summary>The test models' narrow heads and the VAE's 512-wide head keep the fp32-math kernels, and pass.</summary>
    [Theory]
    [InlineData(4, AttentionForwardKernel.RowPerThread)]
    [InlineData(8, AttentionForwardKernel.RowPerThread)]
    [InlineData(32, AttentionForwardKernel.RowPerThread)]
    [InlineData(44, AttentionForwardKernel.WarpPerRow)]
    [InlineData(512, AttentionForwardKernel.WarpPerRow)]
    public void Other_widths_keep_the_fp32_math_kernels(int headDim, AttentionForwardKernel expected)
    {
        Check(800, DType.BF16, AttentionShape.Create(1, 21, 19, 1, headDim), expected, auto: true);
    }

    [Fact]
    public void The_launcher_picks_tensor_cores_only_where_the_device_and_the_layout_have_them()
    {
        var args = AttentionKernels.Bnhd(AttentionShape.Create(1, 64, 77, 8, 40));
        DevicePtr aligned = new(0x10000), odd = new(0x10008);
        Assert.Equal(AttentionForwardKernel.TensorCore, AttentionKernels.ChooseForward(80, args, DType.BF16, aligned, aligned, aligned, aligned));
        Assert.Equal(AttentionForwardKernel.TensorCore, AttentionKernels.ChooseForward(75, args, DType.F16, aligned, aligned, aligned, aligned));
        Assert.Equal(AttentionForwardKernel.WarpPerRow, AttentionKernels.ChooseForward(75, args, DType.BF16, aligned, aligned, aligned, aligned)); // no bf16 mma on Turing
        Assert.Equal(AttentionForwardKernel.WarpPerRow, AttentionKernels.ChooseForward(90, args, DType.F32, aligned, aligned, aligned, aligned));
        Assert.Equal(AttentionForwardKernel.WarpPerRow, AttentionKernels.ChooseForward(80, args, DType.BF16, aligned, odd, aligned, aligned));
        var strided = args;
        unsafe { strided.KStride[2] = 8 * 40 + 4; } // rows no longer 16-byte aligned
        Assert.Equal(AttentionForwardKernel.WarpPerRow, AttentionKernels.ChooseForward(80, strided, DType.BF16, aligned, aligned, aligned, aligned));
        using var s = new EmuSession(750);
        var e = Assert.Throws<NotSupportedException>(() =>
            AttentionKernels.ForwardTensorCore(s.Device, args, aligned, aligned, aligned, aligned, aligned, DType.BF16));
        Assert.Contains("sm_80", e.Message);
    }

    /// <summary>A long self-attention (4096 + 17 queries and keys: 65 query blocks, 65 key tiles of which the last holds 17 keys).</summary>
    [Fact, Trait("Category", "Slow")]
    public void Long_self_attention_matches_the_fp32_reference()
    {
        Check(800, DType.BF16, AttentionShape.Create(1, 4096 + 17, 4096 + 17, 1, 64), AttentionForwardKernel.TensorCore, auto: true);
    }

    private void Check(int tier, DType t, AttentionShape shape, AttentionForwardKernel expected, bool auto)
    {
        Func<float, ushort> toBits = t == DType.BF16 ? BFloat16.FromSingle : v => BitConverter.HalfToUInt16Bits((Half)v);
        Func<ushort, float> toFloat = t == DType.BF16 ? BFloat16.ToSingle : h => (float)BitConverter.UInt16BitsToHalf(h);
        ushort nan = t == DType.BF16 ? (ushort)0x7fc0 : (ushort)0x7e00;
        var q = EmuSession.Random((int)shape.QueryLengthTotal, 51, 2f).Select(toBits).ToArray();
        var k = EmuSession.Random((int)shape.KeyLengthTotal, 52, 2f).Select(toBits).ToArray();
        var v = EmuSession.Random((int)shape.ValueLengthTotal, 53).Select(toBits).ToArray();
        var oRef = new float[shape.OutputLengthTotal];
        var lseRef = new float[shape.LseLength];
        AttentionReference.Forward<float>(shape, q.Select(toFloat).ToArray(), k.Select(toFloat).ToArray(), v.Select(toFloat).ToArray(), oRef, lseRef);

        using var s = new EmuSession(tier);
        var args = AttentionKernels.Bnhd(shape);
        DevicePtr pq = s.Upload(q), pk = s.Upload(k), pv = s.Upload(v);
        DevicePtr o = s.Upload(Enumerable.Repeat(nan, oRef.Length).ToArray()), lse = s.Output(lseRef.Length);
        string what = $"{t} sm_{tier / 10} d={shape.HeadDim} nq={shape.QueryLength} nk={shape.KeyLength} causal={shape.Causal}";
        if (auto)
        {
            Assert.Equal(expected, AttentionKernels.ChooseForward(s.Device.ComputeCapability, args, t, pq, pk, pv, o));
            AttentionKernels.Forward(s.Device, args, pq, pk, pv, o, lse, t);
        }
        else AttentionKernels.Forward(s.Device, args, pq, pk, pv, o, lse, t, expected);
        var got = s.Download<ushort>(o, oRef.Length).Select(toFloat).ToArray();
        double error = TensorAssert.RelativeMaxError(got, oRef), lseError = TensorAssert.RelativeMaxError(s.Download(lse, lseRef.Length), lseRef);
        output.WriteLine($"{what} ({expected}): o error {error:E2} (bound {StorageBound(t):E0}), lse error {lseError:E2}");
        Assert.True(error <= StorageBound(t), $"{what}: o relative max error {error:E3} > {StorageBound(t):E1}");
        Assert.True(lseError <= Fp32Bound, $"{what}: lse relative max error {lseError:E3} > {Fp32Bound:E1}");
    }
}
