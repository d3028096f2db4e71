using CudaDream.Engine.Backends;
using CudaDream.Engine.Backends.Cpu.Kernels;
using CudaDream.Engine.Ops;
using CudaDream.TestSupport;
using Xunit;

namespace CudaDream.Engine.Tests.Emu;

/// <summary>Every kernel of kernels/*.cu run by the emulator on each tier and compared with the CPU reference.</summary>
public class EmuKernelTests
{
    private const double Tol = 1e-5;

    [Theory, MemberData(nameof(EmuTiers.All), MemberType = typeof(EmuTiers))]
    public void Softmax_matches_reference(int tier)
    {
        using var s = new EmuSession(tier);
        int rows = 7, cols = 300;
        var x = EmuSession.Random(rows * cols, 1, 4f);
        var dy = EmuSession.Random(rows * cols, 2);
        var y = s.Output(rows * cols);
        SoftmaxKernels.Forward(s.Device, s.Upload(x), y, rows, cols);
        var yRef = new float[x.Length];
        SoftmaxReference.Forward<float>(rows, cols, x, yRef);
        TensorAssert.Close(yRef, s.Download(y, x.Length), Tol, "softmax");

        var dx = s.Output(x.Length);
        SoftmaxKernels.Backward(s.Device, s.Upload(dy), s.Upload(yRef), dx, rows, cols);
        var dxRef = new float[x.Length];
        SoftmaxReference.Backward<float>(rows, cols, yRef, dy, dxRef);
        TensorAssert.Close(dxRef, s.Download(dx, x.Length), Tol, "softmax backward");
    }

    public static IEnumerable<object[]> GroupNormCases() =>
        EmuTiers.All.Select(t => new[] { t[0], (object)37 }).Append([800, 4099]); // 4099: each group in 8 slices, a ragged last

    [Theory, MemberData(nameof(GroupNormCases))]
    public void GroupNorm_with_and_without_silu_matches_reference(int tier, int S)
    {
        using var s = new EmuSession(tier);
        int N = 2, C = 8, G = 4;
        Assert.True(S < 1000 || GroupNormKernels.Chunks(N * G, C / G * S) > 1);
        var scratch = s.Output(GroupNormKernels.ScratchBytes(N, C, S, G) / 4);
        var x = EmuSession.Random(N * C * S, 3, 2f);
        var gamma = EmuSession.Random(C, 4);
        var beta = EmuSession.Random(C, 5);
        var dy = EmuSession.Random(x.Length, 6);
        foreach (bool silu in new[] { false, true })
        {
            var y = s.Output(x.Length); var mean = s.Output(N * G); var rstd = s.Output(N * G);
            var px = s.Upload(x); var pg = s.Upload(gamma); var pb = s.Upload(beta);
            GroupNormKernels.Forward(s.Device, px, pg, pb, y, mean, rstd, scratch, N, C, S, G, 1e-5f, silu);
            float[] yRef = new float[x.Length], mRef = new float[N * G], rRef = new float[N * G];
            GroupNormReference.Forward<float>(N, C, S, G, 1e-5f, x, gamma, beta, yRef, mRef, rRef, silu);
            TensorAssert.Close(yRef, s.Download(y, x.Length), Tol, $"groupnorm silu={silu}");
            TensorAssert.Close(rRef, s.Download(rstd, N * G), Tol, "rstd");

            var dx = s.Output(x.Length); var dg = s.Output(C); var db = s.Output(C);
            GroupNormKernels.Backward(s.Device, px, s.Upload(dy), pg, pb, mean, rstd, dx, dg, db, scratch, N, C, S, G, silu);
            float[] dxRef = new float[x.Length], dgRef = new float[C], dbRef = new float[C];
            GroupNormReference.Backward<float>(N, C, S, G, x, gamma, beta, mRef, rRef, dy, dxRef, dgRef, dbRef, silu);
            TensorAssert.Close(dxRef, s.Download(dx, x.Length), 1e-4, $"groupnorm dx silu={silu}");
            TensorAssert.Close(dgRef, s.Download(dg, C), 1e-4, "dgamma");
            TensorAssert.Close(dbRef, s.Download(db, C), 1e-4, "dbeta");
        }
    }

    [Theory, MemberData(nameof(EmuTiers.All), MemberType = typeof(EmuTiers))]
    public void LayerNorm_matches_reference(int tier)
    {
        using var s = new EmuSession(tier);
        int rows = 9, D = 70;
        var x = EmuSession.Random(rows * D, 7, 3f);
        var gamma = EmuSession.Random(D, 8);
        var beta = EmuSession.Random(D, 9);
        var dy = EmuSession.Random(x.Length, 10);
        var y = s.Output(x.Length); var mean = s.Output(rows); var rstd = s.Output(rows);
        var px = s.Upload(x); var pg = s.Upload(gamma);
        LayerNormKernels.Forward(s.Device, px, pg, s.Upload(beta), y, mean, rstd, rows, D, 1e-5f);
        float[] yRef = new float[x.Length], mRef = new float[rows], rRef = new float[rows];
        LayerNormReference.Forward<float>(rows, D, 1e-5f, x, gamma, beta, yRef, mRef, rRef);
        TensorAssert.Close(yRef, s.Download(y, x.Length), Tol, "layernorm");

        var dx = s.Output(x.Length); var dg = s.Output(D); var db = s.Output(D);
        LayerNormKernels.Backward(s.Device, px, s.Upload(dy), pg, mean, rstd, dx, dg, db, rows, D);
        float[] dxRef = new float[x.Length], dgRef = new float[D], dbRef = new float[D];
        LayerNormReference.Backward<float>(rows, D, x, gamma, mRef, rRef, dy, dxRef, dgRef, dbRef);
        TensorAssert.Close(dxRef, s.Download(dx, x.Length), 1e-4, "layernorm dx");
        TensorAssert.Close(dgRef, s.Download(dg, D), 1e-4, "dgamma");
        TensorAssert.Close(dbRef, s.Download(db, D), 1e-4, "dbeta");
    }

    public static IEnumerable<object[]> ActivationCases() =>
        from tier in Backends.Emu.EmuLibrary.Tiers
        from op in new[] { UnaryOp.Silu, UnaryOp.GeluErf, UnaryOp.QuickGelu, UnaryOp.Sigmoid }
        select new object[] { tier, op };

    [Theory, MemberData(nameof(ActivationCases))]
    public void Activation_matches_reference(int tier, UnaryOp op)
    {
        using var s = new EmuSession(tier);
        int n = 1000;
        var x = EmuSession.Random(n, 11, 6f);
        var dy = EmuSession.Random(n, 12);
        var y = s.Output(n); var dx = s.Output(n);
        var px = s.Upload(x);
        ActivationKernels.Forward(s.Device, op, px, y, n);
        ActivationKernels.Backward(s.Device, op, px, s.Upload(dy), dx, n);
        float[] yRef = new float[n], dxRef = new float[n];
        switch (op)
        {
            case UnaryOp.Silu: ActivationReference.Silu<float>(x, yRef); ActivationReference.SiluBackward<float>(x, dy, dxRef); break;
            case UnaryOp.GeluErf: ActivationReference.Gelu<float>(x, yRef); ActivationReference.GeluBackward<float>(x, dy, dxRef); break;
            case UnaryOp.QuickGelu: ActivationReference.QuickGelu<float>(x, yRef); ActivationReference.QuickGeluBackward<float>(x, dy, dxRef); break;
            default: ActivationReference.Sigmoid<float>(x, yRef); ActivationReference.SigmoidBackward<float>(yRef, dy, dxRef); break;
        }
        TensorAssert.Close(yRef, s.Download(y, n), Tol, op.ToString());
        TensorAssert.Close(dxRef, s.Download(dx, n), Tol, op + " backward");
    }

    [Theory, MemberData(nameof(EmuTiers.All), MemberType = typeof(EmuTiers))]
    public void Geglu_matches_reference(int tier)
    {
        using var s = new EmuSession(tier);
        int rows = 5, half = 24;
        var x = EmuSession.Random(rows * 2 * half, 13, 3f);
        var dy = EmuSession.Random(rows * half, 14);
        var y = s.Output(rows * half); var dx = s.Output(x.Length);
        var px = s.Upload(x);
        ActivationKernels.Geglu(s.Device, px, y, rows, half);
        ActivationKernels.GegluBackward(s.Device, px, s.Upload(dy), dx, rows, half);
        float[] yRef = new float[rows * half], dxRef = new float[x.Length];
        ActivationReference.Geglu<float>(rows, half, x, yRef);
        ActivationReference.GegluBackward<float>(rows, half, x, dy, dxRef);
        TensorAssert.Close(yRef, s.Download(y, yRef.Length), Tol, "geglu");
        TensorAssert.Close(dxRef, s.Download(dx, x.Length), Tol, "geglu backward");
    }

    public static IEnumerable<object[]> ConvCases() =>
        from tier in Backends.Emu.EmuLibrary.Tiers
        from c in new[] { "3x3 pad1", "3x3 stride2 pad1", "1x1", "3x3 stride2 dilation2" }
        select new object[] { tier, c };

    [Theory, MemberData(nameof(ConvCases))]
    public void Conv2d_forward_and_backward_match_reference(int tier, string kind)
    {
        var g = kind switch
        {
            "3x3 pad1" => new Conv2dGeometry(2, 3, 9, 7, 4, 3, 3, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1),
            "3x3 stride2 pad1" => new Conv2dGeometry(2, 3, 9, 8, 5, 3, 3, 2, 2, 1, 1, 1, 1),
            "1x1" => new Conv2dGeometry(2, 6, 5, 5, 3, 1, 1),
            _ => new Conv2dGeometry(1, 2, 11, 10, 3, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2),
        };
        using var s = new EmuSession(tier);
        var x = EmuSession.Random((int)g.InputLength, 15);
        var w = EmuSession.Random((int)g.WeightLength, 16);
        var bias = EmuSession.Random(g.OutChannels, 17);
        var dy = EmuSession.Random((int)g.OutputLength, 18);
        var col = s.Output(Math.Max(1, ConvKernels.WorkspaceElements(g)));
        var px = s.Upload(x); var pw = s.Upload(w);
        var y = s.Output(g.OutputLength);
        ConvKernels.Forward(s.Device, g, px, pw, s.Upload(bias), y, col);
        var yRef = new float[g.OutputLength];
        ConvReference.Conv2dForward<float>(g, x, w, bias, yRef);
        TensorAssert.Close(yRef, s.Download(y, yRef.Length), Tol, "conv forward");

        var dx = s.Output(g.InputLength); var dw = s.Output(g.WeightLength); var db = s.Output(g.OutChannels);
        ConvKernels.Backward(s.Device, g, px, pw, s.Upload(dy), dx, dw, db, col);
        float[] dxRef = new float[g.InputLength], dwRef = new float[g.WeightLength], dbRef = new float[g.OutChannels];
        ConvReference.Conv2dBackwardData<float>(g, dy, w, dxRef);
        ConvReference.Conv2dBackwardWeight<float>(g, x, dy, dwRef);
        ConvReference.Conv2dBackwardBias<float>(g, dy, dbRef);
        TensorAssert.Close(dxRef, s.Download(dx, dxRef.Length), Tol, "conv dx");
        TensorAssert.Close(dwRef, s.Download(dw, dwRef.Length), Tol, "conv dw");
        TensorAssert.Close(dbRef, s.Download(db, dbRef.Length), Tol, "conv dbias");
    }

    [Theory, MemberData(nameof(EmuTiers.All), MemberType = typeof(EmuTiers))]
    public void Resize_and_pad_match_reference(int tier)
    {
        using var s = new EmuSession(tier);
        int n = 2, c = 3, h = 5, w = 4;
        var x = EmuSession.Random(n * c * h * w, 19);
        var px = s.Upload(x);
        var up = s.Output(x.Length * 4);
        ResizeKernels.Nearest(s.Device, px, up, n * c, h, w, 2, 2);
        var upRef = new float[x.Length * 4];
        ResizeReference.NearestForward<float>(n, c, h, w, 2 * h, 2 * w, x, upRef);
        TensorAssert.Close(upRef, s.Download(up, upRef.Length), 0, "resize");
        var dUp = EmuSession.Random(upRef.Length, 20);
        var dx = s.Output(x.Length);
        ResizeKernels.NearestBackward(s.Device, s.Upload(dUp), dx, n * c, h, w, 2, 2);
        var dxRef = new float[x.Length];
        ResizeReference.NearestBackward<float>(n, c, h, w, 2 * h, 2 * w, dUp, dxRef);
        TensorAssert.Close(dxRef, s.Download(dx, x.Length), Tol, "resize backward");

        int padded = n * c * (h + 1) * (w + 1);
        var py = s.Output(padded);
        PadKernels.Spatial(s.Device, px, py, n * c, h, w, 0, 1, 0, 1); // the VAE's downsample padding
        var pyRef = new float[padded];
        PadReference.ConstantForward<float>(n, c, h, w, 0, 0, 1, 1, 0f, x, pyRef);
        TensorAssert.Close(pyRef, s.Download(py, padded), 0, "pad");
    }

    [Theory, MemberData(nameof(EmuTiers.All), MemberType = typeof(EmuTiers))]
    public void Mse_loss_matches_reference(int tier)
    {
        using var s = new EmuSession(tier);
        int n = 2 * 4 * 16 * 16;
        var pred = EmuSession.Random(n, 22); var target = EmuSession.Random(n, 23);
        var pp = s.Upload(pred); var pt = s.Upload(target);
        var loss = s.Output(1);
        LossKernels.Mse(s.Device, pp, pt, DevicePtr.Null, loss, n);
        float lossRef = LossReference.WeightedMse<float>(1, n, pred, target, ReadOnlySpan<float>.Empty);
        TensorAssert.Close(new[] { lossRef }, s.Download(loss, 1), Tol, "mse");
        var dpred = s.Output(n);
        LossKernels.MseBackward(s.Device, pp, pt, DevicePtr.Null, s.Upload(new[] { 0.5f }), dpred, n);
        var dRef = new float[n];
        LossReference.WeightedMseBackward<float>(1, n, pred, target, ReadOnlySpan<float>.Empty, 0.5f, dRef);
        TensorAssert.Close(dRef, s.Download(dpred, n), Tol, "mse backward");
    }

    public static IEnumerable<object[]> AttentionCases() =>
        from tier in Backends.Emu.EmuLibrary.Tiers
        from c in new[] { "unet self 8x4", "cross 77 keys", "clip causal", "vae 512 wide" }
        select new object[] { tier, c };

    [Theory, MemberData(nameof(AttentionCases))]
    public void Attention_forward_and_backward_match_reference(int tier, string kind)
    {
        var a = kind switch
        {
            "unet self 8x4" => AttentionShape.Create(2, 40, 40, 8, 4),
            "cross 77 keys" => AttentionShape.Create(1, 24, 77, 2, 8),
            "clip causal" => AttentionShape.Create(1, 21, 21, 4, 8, causal: true),
            _ => AttentionShape.Create(1, 16, 16, 1, 512),
        };
        using var s = new EmuSession(tier);
        var q = EmuSession.Random((int)a.QueryLengthTotal, 24, 2f);
        var k = EmuSession.Random((int)a.KeyLengthTotal, 25, 2f);
        var v = EmuSession.Random((int)a.ValueLengthTotal, 26);
        var dout = EmuSession.Random((int)a.OutputLengthTotal, 27);
        var args = AttentionKernels.Bnhd(a);
        DevicePtr pq = s.Upload(q), pk = s.Upload(k), pv = s.Upload(v);
        var o = s.Output(a.OutputLengthTotal); var lse = s.Output(a.LseLength);
        AttentionKernels.Forward(s.Device, args, pq, pk, pv, o, lse);
        float[] oRef = new float[a.OutputLengthTotal], lseRef = new float[a.LseLength];
        AttentionReference.Forward<float>(a, q, k, v, oRef, lseRef);
        TensorAssert.Close(oRef, s.Download(o, oRef.Length), Tol, "attention");
        TensorAssert.Close(lseRef, s.Download(lse, lseRef.Length), Tol, "lse");

        var dq = s.Output(q.Length); var dk = s.Output(k.Length); var dv = s.Output(v.Length); var delta = s.Output(a.LseLength);
        AttentionKernels.Backward(s.Device, args, pq, pk, pv, s.Upload(oRef), s.Upload(dout), s.Upload(lseRef), delta, dq, dk, dv);
        float[] dqRef = new float[q.Length], dkRef = new float[k.Length], dvRef = new float[v.Length];
        AttentionReference.Backward<float>(a, q, k, v, oRef, lseRef, dout, dqRef, dkRef, dvRef);
        TensorAssert.Close(dqRef, s.Download(dq, q.Length), 1e-4, "dq");
        TensorAssert.Close(dkRef, s.Download(dk, k.Length), 1e-4, "dk");
        TensorAssert.Close(dvRef, s.Download(dv, v.Length), 1e-4, "dv");
    }

    [Theory, MemberData(nameof(EmuTiers.All), MemberType = typeof(EmuTiers))]
    public void Gemm_follows_cublas_semantics_and_rejects_bad_leading_dimensions(int tier)
    {
        using var s = new EmuSession(tier);
        foreach (var (ta, tb) in new[] { (false, false), (true, false), (false, true), (true, true) })
        {
            int M = 5, N = 7, K = 3;
            var a = EmuSession.Random(M * K, 28); var b = EmuSession.Random(K * N, 29); var c0 = EmuSession.Random(M * N, 30);
            var pc = s.Upload(c0);
            MatMulKernels.MatMul(s.Device, ta, tb, M, N, K, s.Upload(a), s.Upload(b), pc, alpha: 1.5f, beta: 0.5f);
            var cRef = (float[])c0.Clone();
            GemmReference.Gemm<float>(ta, tb, M, N, K, 1.5f, a, ta ? M : K, b, tb ? K : N, 0.5f, cRef, N);
            TensorAssert.Close(cRef, s.Download(pc, M * N), Tol, $"gemm transA={ta} transB={tb}");
        }
        var bad = new GemmArgs(GemmOp.N, GemmOp.N, 4, 4, 4, 1, s.Output(16), 3, 0, s.Output(16), 4, 0, 0, s.Output(16), 4, 0);
        var e = Assert.Throws<Backends.Emu.EmuKernelException>(() => s.Device.Gemm(bad));
        Assert.Contains("lda", e.Message);
    }

    public static IEnumerable<object[]> MmaCases() =>
        from tier in Backends.Emu.EmuLibrary.Tiers
        from e in new[] { "f16", "bf16", "tf32" }
        select new object[] { tier, e };

    /// <summary>The tensor-core fragment path of kernels/emu/selftest.cu (and below sm_80 the scalar fallback) against GEMM on the rounded inputs.</summary>
    [Theory, MemberData(nameof(MmaCases))]
    public void Mma_tile_gemm_matches_reference_on_rounded_inputs(int tier, string elem)
    {
        using var s = new EmuSession(tier);
        int M = 32, N = 16, K = 24;
        var a = EmuSession.Random(M * K, 37); var b = EmuSession.Random(K * N, 38);
        var c = s.Output(M * N);
        s.Device.Launch("selftest_mma_gemm_" + elem, new Dim3((uint)(N / 8), (uint)(M / 16)), new Dim3(32), 0, new KernelArgs().Ptr(s.Upload(a)).Ptr(s.Upload(b)).Ptr(c).I32(M).I32(N).I32(K));
        Func<float, float> round = elem switch
        {
            "f16" => v => (float)(Half)v,
            "bf16" => v => Tensors.BFloat16.ToSingle(Tensors.BFloat16.FromSingle(v)),
            _ => v => { uint u = BitConverter.SingleToUInt32Bits(v); return BitConverter.UInt32BitsToSingle((u + 0x1000u) & 0xffffe000u); },
        };
        var cRef = new float[M * N];
        GemmReference.Gemm<float>(false, false, M, N, K, 1f, a.Select(round).ToArray(), K, b.Select(round).ToArray(), N, 0f, cRef, N);
        TensorAssert.Close(cRef, s.Download(c, M * N), 1e-5, $"mma {elem}");
    }
}
