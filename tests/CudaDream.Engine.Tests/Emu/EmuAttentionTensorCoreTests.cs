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
/// (AttentionReference on the inputs as stored, i.e. rounded to bf16/fp16): forward outputs within DESIGN.md's per-op
/// bounds (bf16 2e-2·max|ref|, fp16 5e-3·max|ref|), the fp32 log-sum-exp within the fp32 bound 1e-4·max|ref|; the
/// backward (from the forward's stored o and lse) with gradient cosine ≥ 0.999 and within the same per-op bounds.
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
            Check(tier, t, AttentionShape.Create(2, 81, nk, 2, headDim, causal), AttentionKernelFamily.TensorCore, auto: true);
    }

    public static IEnumerable<object[]> OtherWidthCases() =>
        from d in new[] { 8, 24, 48, 72, 96, 128, 136 } select new object[] { d };

    /// <summary>Every register class and a half k step (D % 16 == 8) at widths the launcher picks other kernels for by default (8, 24).</summary>
    [Theory, MemberData(nameof(OtherWidthCases))]
    public void Kernel_takes_every_multiple_of_8_up_to_160(int headDim)
    {
        Check(800, DType.BF16, AttentionShape.Create(1, 70, 77, 2, headDim), AttentionKernelFamily.TensorCore, auto: false);
        Check(800, DType.F16, AttentionShape.Create(1, 33, 33, 1, headDim, causal: true), AttentionKernelFamily.TensorCore, auto: false);
    }

    /// <summary>The test models' narrow heads and the VAE's 512-wide head keep the fp32-math kernels, and pass.</summary>
    [Theory]
    [InlineData(4, AttentionKernelFamily.RowPerThread)]
    [InlineData(8, AttentionKernelFamily.RowPerThread)]
    [InlineData(32, AttentionKernelFamily.RowPerThread)]
    [InlineData(44, AttentionKernelFamily.WarpPerRow)]
    [InlineData(512, AttentionKernelFamily.WarpPerRow)]
    public void Other_widths_keep_the_fp32_math_kernels(int headDim, AttentionKernelFamily expected)
    {
        Check(800, DType.BF16, AttentionShape.Create(1, 21, 19, 1, headDim), expected, auto: true);
    }

    [Fact]
    public void The_launcher_picks_tensor_cores_only_where_the_device_and_the_layout_have_them()
    {
        var args = AttentionKernels.Bnhd(AttentionShape.Create(1, 64, 77, 8, 40));
        DevicePtr aligned = new(0x10000), odd = new(0x10008);
        Assert.Equal(AttentionKernelFamily.TensorCore, AttentionKernels.ChooseForward(80, args, DType.BF16, aligned, aligned, aligned, aligned));
        Assert.Equal(AttentionKernelFamily.TensorCore, AttentionKernels.ChooseForward(75, args, DType.F16, aligned, aligned, aligned, aligned));
        Assert.Equal(AttentionKernelFamily.WarpPerRow, AttentionKernels.ChooseForward(75, args, DType.BF16, aligned, aligned, aligned, aligned)); // no bf16 mma on Turing
        Assert.Equal(AttentionKernelFamily.WarpPerRow, AttentionKernels.ChooseForward(90, args, DType.F32, aligned, aligned, aligned, aligned));
        Assert.Equal(AttentionKernelFamily.WarpPerRow, AttentionKernels.ChooseForward(80, args, DType.BF16, aligned, odd, aligned, aligned));
        var strided = args;
        unsafe { strided.KStride[2] = 8 * 40 + 4; } // rows no longer 16-byte aligned
        Assert.Equal(AttentionKernelFamily.WarpPerRow, AttentionKernels.ChooseForward(80, strided, DType.BF16, aligned, aligned, aligned, aligned));
        using var s = new EmuSession(750);
        var e = Assert.Throws<NotSupportedException>(() =>
            AttentionKernels.ForwardTensorCore(s.Device, args, aligned, aligned, aligned, aligned, aligned, DType.BF16));
        Assert.Contains("sm_80", e.Message);
    }

    /// <summary>A long self-attention (4096 + 17 queries and keys: 65 query blocks, 65 key tiles of which the last holds 17 keys).</summary>
    [Fact, Trait("Category", "Slow")]
    public void Long_self_attention_matches_the_fp32_reference()
    {
        Check(800, DType.BF16, AttentionShape.Create(1, 4096 + 17, 4096 + 17, 1, 64), AttentionKernelFamily.TensorCore, auto: true);
    }

    private void Check(int tier, DType t, AttentionShape shape, AttentionKernelFamily expected, bool auto, bool backward = true)
    {
        Func<float, ushort> toBits = t == DType.BF16 ? BFloat16.FromSingle : v => BitConverter.HalfToUInt16Bits((Half)v);
        Func<ushort, float> toFloat = t == DType.BF16 ? BFloat16.ToSingle : h => (float)BitConverter.UInt16BitsToHalf(h);
        ushort nan = t == DType.BF16 ? (ushort)0x7fc0 : (ushort)0x7e00;
        ushort[] Stored(float[] x) => x.Select(toBits).ToArray();
        float[] Value(ushort[] x) => x.Select(toFloat).ToArray();
        var q = Stored(EmuSession.Random((int)shape.QueryLengthTotal, 51, 2f));
        var k = Stored(EmuSession.Random((int)shape.KeyLengthTotal, 52, 2f));
        var v = Stored(EmuSession.Random((int)shape.ValueLengthTotal, 53));
        var oRef = new float[shape.OutputLengthTotal];
        var lseRef = new float[shape.LseLength];
        AttentionReference.Forward<float>(shape, Value(q), Value(k), Value(v), oRef, lseRef);

        using var s = new EmuSession(tier);
        var args = AttentionKernels.Bnhd(shape);
        DevicePtr pq = s.Upload(q), pk = s.Upload(k), pv = s.Upload(v);
        DevicePtr NaNs(long n) => s.Upload(Enumerable.Repeat(nan, checked((int)n)).ToArray());
        DevicePtr o = NaNs(oRef.Length), lse = s.Output(lseRef.Length);
        string what = $"{t} sm_{tier / 10} d={shape.HeadDim} nq={shape.QueryLength} nk={shape.KeyLength} causal={shape.Causal}";
        if (auto)
        {
            Assert.Equal(expected, AttentionKernels.ChooseForward(s.Device.ComputeCapability, args, t, pq, pk, pv, o));
            AttentionKernels.Forward(s.Device, args, pq, pk, pv, o, lse, t);
        }
        else AttentionKernels.Forward(s.Device, args, pq, pk, pv, o, lse, t, expected);
        var oStored = s.Download<ushort>(o, oRef.Length);
        double error = TensorAssert.RelativeMaxError(Value(oStored), oRef), lseError = TensorAssert.RelativeMaxError(s.Download(lse, lseRef.Length), lseRef);
        output.WriteLine($"{what} forward ({expected}): o error {error:E2} (bound {StorageBound(t):E0}), lse error {lseError:E2}");
        Assert.True(error <= StorageBound(t), $"{what}: o relative max error {error:E3} > {StorageBound(t):E1}");
        Assert.True(lseError <= Fp32Bound, $"{what}: lse relative max error {lseError:E3} > {Fp32Bound:E1}");
        if (!backward) return;

        // The backward from the forward's own stored o and lse, as a training step runs it; the reference from the same o.
        var dout = Stored(EmuSession.Random((int)shape.OutputLengthTotal, 54));
        float[] dqRef = new float[q.Length], dkRef = new float[k.Length], dvRef = new float[v.Length];
        AttentionReference.Backward<float>(shape, Value(q), Value(k), Value(v), Value(oStored), s.Download(lse, lseRef.Length), Value(dout), dqRef, dkRef, dvRef);
        DevicePtr pdo = s.Upload(dout), delta = s.Output(lseRef.Length), dq = NaNs(q.Length), dk = NaNs(k.Length), dv = NaNs(v.Length);
        var family = auto ? AttentionKernels.ChooseBackward(s.Device.ComputeCapability, args, t, pq, pk, pv, o, pdo, dq, dk, dv)
            : AttentionKernels.TensorCoreBackwardTiling(shape.HeadDim) != null ? expected : AttentionKernelFamily.WarpPerRow;
        AttentionKernels.Backward(s.Device, args, pq, pk, pv, o, pdo, lse, delta, dq, dk, dv, t, family);
        foreach (var (name, reference, p) in new[] { ("dq", dqRef, dq), ("dk", dkRef, dk), ("dv", dvRef, dv) })
        {
            var got = Value(s.Download<ushort>(p, reference.Length));
            double cosine = Cosine(got, reference), max = TensorAssert.RelativeMaxError(got, reference);
            output.WriteLine($"{what} backward ({family}): {name} cosine {cosine:F6}, relative max error {max:E2}");
            // DESIGN.md: a gradient in bf16/fp16 points where the fp32 one does, cosine ≥ 0.999.
            Assert.True(cosine >= 0.999, $"{what}: {name} cosine {cosine:F6} to the fp32 reference < 0.999 (relative max error {max:E2})");
            // and elementwise within the per-op storage bound (measured ≤ 4.7e-3 bf16, ≤ 8e-4 fp16 at these shapes)
            Assert.True(max <= StorageBound(t), $"{what}: {name} relative max error {max:E3} > {StorageBound(t):E1}");
        }
    }

    private static double Cosine(float[] a, float[] b)
    {
        double dot = 0, aa = 0, bb = 0;
        for (int i = 0; i < a.Length; i++) { dot += (double)a[i] * b[i]; aa += (double)a[i] * a[i]; bb += (double)b[i] * b[i]; }
        return aa == 0 && bb == 0 ? 1 : dot / Math.Sqrt(aa * bb);
    }
}
