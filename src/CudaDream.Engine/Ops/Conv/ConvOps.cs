using System.Numerics;
using System.Runtime.InteropServices;
using CudaDream.Engine.Backends;
using CudaDream.Engine.Backends.Cpu;
using CudaDream.Engine.Backends.Device;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Tensors;
using static CudaDream.Engine.Backends.Cpu.FastKernels;
using static CudaDream.Engine.Backends.KernelLaunchers;
using static CudaDream.Engine.Graph.Infer;

namespace CudaDream.Engine.Ops;

/// <summary>
/// 2-D convolution, forward and backward:
/// <list type="bullet">
/// <item>ONNX <c>Conv</c> (groups, strides, dilations, pads or auto_pad), <c>ConvGradInput(dy, w)</c> → dx and
/// <c>ConvGradWeight(x, dy)</c> → dw, which carry Conv's attributes plus <c>input_shape</c> / <c>weight_shape</c>; the
/// bias gradient is a ReduceSum over (N, H, W).</item>
/// <item>CPU: <see cref="ConvReference"/> (the oracle), <see cref="ConvFast"/> (im2col + GEMM) and <see cref="ConvShifted"/>
/// (small stride-1 convolutions as one GEMM over tap-shifted rows); the geometry is <see cref="Conv2dGeometry"/>.</item>
/// <item>devices: <see cref="ConvKernels"/> (kernels/conv.cu: im2col, col2im and the channel bias, around the device GEMM).</item>
/// </list>
/// </summary>
public static class ConvOps
{
    public const string Conv = "Conv";
    public const string ConvGradInput = "ConvGradInput";
    public const string ConvGradWeight = "ConvGradWeight";

    internal static OpHome Home { get; } = new("Conv", "conv.cu",
    [
        new Op
        {
            Name = Conv, Gradient = Gradient, Float32Inputs = [2],
            InferShapes = n => { var p = Resolve(n); Set(n, 0, In(n, 0).DType, [p.N, p.Cout, p.Ho, p.Wo]); },
            MultiplyAdds = n => { var p = Resolve(n); return (long)p.N * p.Cout * p.Ho * p.Wo * (p.Cin / p.Groups) * p.Kh * p.Kw; },
            Cpu = (n, i, o, c) => Dispatch.Float(n, i[0]!.DType, new ForwardAction(n, i, o[0], c)),
            Device = DeviceForward,
        },
        new Op
        {
            Name = ConvGradInput, InferShapes = n => Set(n, 0, In(n, 0).DType, n.Attributes.Ints("input_shape")!.Select(d => (int)d).ToArray()), MultiplyAdds = GradientMacs,
            Cpu = (n, i, o, c) => Dispatch.Float(n, i[0]!.DType, new ConvGradAction(n, i, o[0], c, true)),
            Device = s => DeviceBackward(s, input: true),
        },
        new Op
        {
            Name = ConvGradWeight, InferShapes = n => Set(n, 0, In(n, 0).DType, n.Attributes.Ints("weight_shape")!.Select(d => (int)d).ToArray()), MultiplyAdds = GradientMacs,
            Cpu = (n, i, o, c) => Dispatch.Float(n, i[0]!.DType, new ConvGradAction(n, i, o[0], c, false)),
            Device = s => DeviceBackward(s, input: false),
        },
    ], Conformance);

    // ------------------------------------------------------------------ shape rules
    /// <summary>Resolved Conv parameters (2-D only; auto_pad turned into explicit pads).</summary>
    public sealed record ConvParams(int N, int Cin, int H, int W, int Cout, int Kh, int Kw, int Sh, int Sw, int PadTop, int PadLeft, int PadBottom, int PadRight, int Dh, int Dw, int Groups, int Ho, int Wo);

    public static ConvParams Resolve(Node n)
    {
        var x = ShapeOf(n, 0);
        var w = ShapeOf(n, 1);
        if (x.Length != 4 || w.Length != 4) throw new GraphException(n, $"only 2-D convolutions are supported (input {Shapes.Format(x)}, weight {Shapes.Format(w)})");
        var a = n.Attributes;
        int groups = (int)a.Int("group", 1);
        var strides = a.Ints("strides") ?? new long[] { 1, 1 };
        var dil = a.Ints("dilations") ?? new long[] { 1, 1 };
        var pads = a.Ints("pads") ?? new long[] { 0, 0, 0, 0 };
        int kh = w[2], kw = w[3];
        string autoPad = a.String("auto_pad", "NOTSET");
        if (autoPad is "SAME_UPPER" or "SAME_LOWER")
        {
            pads = new long[4];
            for (int d = 0; d < 2; d++)
            {
                long inSize = x[2 + d], stride = strides[d], k = (d == 0 ? kh : kw), di = dil[d];
                long outSize = (inSize + stride - 1) / stride;
                long total = Math.Max(0, (outSize - 1) * stride + (k - 1) * di + 1 - inSize);
                long small = total / 2, big = total - small;
                pads[d] = autoPad == "SAME_UPPER" ? small : big;
                pads[d + 2] = autoPad == "SAME_UPPER" ? big : small;
            }
        }
        else if (autoPad == "VALID") pads = new long[4];
        if (x[1] != w[1] * groups) throw new GraphException(n, $"input channels {x[1]} ≠ weight channels {w[1]} × groups {groups}");
        int ho = (int)((x[2] + pads[0] + pads[2] - dil[0] * (kh - 1) - 1) / strides[0] + 1);
        int wo = (int)((x[3] + pads[1] + pads[3] - dil[1] * (kw - 1) - 1) / strides[1] + 1);
        if (ho <= 0 || wo <= 0) throw new GraphException(n, $"input {Shapes.Format(x)} is too small for the kernel");
        return new ConvParams(x[0], x[1], x[2], x[3], w[0], kh, kw, (int)strides[0], (int)strides[1],
            (int)pads[0], (int)pads[1], (int)pads[2], (int)pads[3], (int)dil[0], (int)dil[1], groups, ho, wo);
    }


    public static Conv2dGeometry Geometry(ConvParams p) =>
        new(p.N, p.Cin, p.H, p.W, p.Cout, p.Kh, p.Kw, p.Sh, p.Sw, p.PadTop, p.PadLeft, p.PadBottom, p.PadRight, p.Dh, p.Dw, p.Groups);

    /// <summary>The geometry a ConvGradInput/ConvGradWeight node carries in its attributes (its forward's, resolved).</summary>
    internal static Conv2dGeometry GradientGeometry(Node n)
    {
        var x = n.Attributes.Ints("input_shape")!;
        var w = n.Attributes.Ints("weight_shape")!;
        var s = n.Attributes.Ints("strides") ?? new long[] { 1, 1 };
        var p = n.Attributes.Ints("pads") ?? new long[] { 0, 0, 0, 0 };
        var d = n.Attributes.Ints("dilations") ?? new long[] { 1, 1 };
        return new Conv2dGeometry((int)x[0], (int)x[1], (int)x[2], (int)x[3], (int)w[0], (int)w[2], (int)w[3], (int)s[0], (int)s[1],
            (int)p[0], (int)p[1], (int)p[2], (int)p[3], (int)d[0], (int)d[1], (int)n.Attributes.Int("group", 1));
    }

    private static long GradientMacs(Node n)
    {
        // The same multiply-adds as the forward: N·Cout·Ho·Wo·(Cin/groups)·kh·kw (w[1] is already Cin/groups).
        var w = n.Attributes.Ints("weight_shape")!;
        var x = n.Attributes.Ints("input_shape")!;
        var dy = n.Op == ConvGradInput ? ShapeOf(n, 0) : ShapeOf(n, 1);
        return x[0] * w[0] * dy[2] * dy[3] * w[1] * w[2] * w[3];
    }

    // ------------------------------------------------------------------ gradient rule
    private static long[] Longs(int[] s) => s.Select(d => (long)d).ToArray();

    private static Value?[] Gradient(Node n, Value?[] dy, bool[] need, GradBuilder b)
    {
        var g = dy[0]!;
        var attrs = n.Attributes.Clone().Set("input_shape", Longs(n.Input(0).Shape!)).Set("weight_shape", Longs(n.Input(1).Shape!));
        var p = Resolve(n);
        // Store the resolved padding so auto_pad never has to be recomputed without the input.
        attrs.Set("pads", new long[] { p.PadTop, p.PadLeft, p.PadBottom, p.PadRight }).Set("auto_pad", "NOTSET");
        var r = new Value?[n.Inputs.Count];
        if (need[0]) r[0] = b.Emit1(ConvGradInput, new[] { g, n.Input(1) }, attrs);
        if (need[1]) r[1] = b.Emit1(ConvGradWeight, new[] { n.Input(0), g }, attrs);
        if (n.Inputs.Count > 2 && n.Inputs[2] != null && need[2])
            r[2] = b.Reshape(b.Emit1("ReduceSum", new[] { g }, new Attributes().Set("axes", new long[] { 0, 2, 3 }).Set("keepdims", 0L)), n.Input(2).Shape!);
        return r;
    }

    // ------------------------------------------------------------------ CPU
    public static class Cpu
    {
        public static void Forward<T>(CpuContext c, in Conv2dGeometry g, ReadOnlySpan<T> x, ReadOnlySpan<T> w, ReadOnlySpan<T> bias, Span<T> y)
            where T : unmanaged, IFloatingPointIeee754<T>
        {
            if (Use<T>(c)) ConvFast.Conv2dForward(g, F(x), F(w), F(bias), F(y));
            else ConvReference.Conv2dForward(g, x, w, bias, y);
        }

        public static void BackwardData<T>(CpuContext c, in Conv2dGeometry g, ReadOnlySpan<T> dy, ReadOnlySpan<T> w, Span<T> dx)
            where T : unmanaged, IFloatingPointIeee754<T>
        {
            if (Use<T>(c)) ConvFast.Conv2dBackwardData(g, F(dy), F(w), F(dx));
            else ConvReference.Conv2dBackwardData(g, dy, w, dx);
        }

        public static void BackwardWeight<T>(CpuContext c, in Conv2dGeometry g, ReadOnlySpan<T> x, ReadOnlySpan<T> dy, Span<T> dw)
            where T : unmanaged, IFloatingPointIeee754<T>
        {
            if (Use<T>(c)) ConvFast.Conv2dBackwardWeight(g, F(x), F(dy), F(dw));
            else ConvReference.Conv2dBackwardWeight(g, x, dy, dw);
        }
    }

    private readonly record struct ForwardAction(Node N, Tensor?[] I, Tensor Y, CpuContext C) : IFloatAction
    {
        public void Run<T>() where T : unmanaged, IFloatingPointIeee754<T>
        {
            var g = Geometry(Resolve(N));
            var bias = I.Length > 2 && I[2] != null ? I[2]!.ReadOnlySpan<T>() : ReadOnlySpan<T>.Empty;
            Cpu.Forward(C, g, I[0]!.ReadOnlySpan<T>(), I[1]!.ReadOnlySpan<T>(), bias, Y.Span<T>());
        }
    }

    private readonly record struct ConvGradAction(Node N, Tensor?[] I, Tensor Y, CpuContext C, bool Input) : IFloatAction
    {
        public void Run<T>() where T : unmanaged, IFloatingPointIeee754<T>
        {
            var g = GradientGeometry(N);
            if (Input) Cpu.BackwardData(C, g, I[0]!.ReadOnlySpan<T>(), I[1]!.ReadOnlySpan<T>(), Y.Span<T>());
            else Cpu.BackwardWeight(C, g, I[0]!.ReadOnlySpan<T>(), I[1]!.ReadOnlySpan<T>(), Y.Span<T>());
        }
    }

    // ------------------------------------------------------------------ devices
    private static Action DeviceForward(DeviceStepBuilder s)
    {
        s.RequireFloat();
        var g = Geometry(Resolve(s.Node));
        var t = s.InType(0);
        var col = s.Scratch(Math.Max(1, ConvKernels.WorkspaceElements(g)) * t.Size());
        var (x, w, bias, y) = (s.In(0), s.In(1), s.In(2), s.Out());
        return () => ConvKernels.Forward(s.Device, g, x.Ptr, w.Ptr, bias.Ptr, y.Ptr, col.Ptr, t);
    }

    private static Action DeviceBackward(DeviceStepBuilder s, bool input)
    {
        s.RequireFloat();
        var g = GradientGeometry(s.Node);
        var t = s.InType(0);
        var col = s.Scratch(Math.Max(1, ConvKernels.WorkspaceElements(g)) * t.Size());
        var result = s.Out();
        if (input)
        {
            var (dy, w) = (s.In(0), s.In(1));
            return () => ConvKernels.Backward(s.Device, g, DevicePtr.Null, w.Ptr, dy.Ptr, result.Ptr, DevicePtr.Null, DevicePtr.Null, col.Ptr, t: t);
        }
        var (x, dyw) = (s.In(0), s.In(1));
        return () => ConvKernels.Backward(s.Device, g, x.Ptr, DevicePtr.Null, dyw.Ptr, DevicePtr.Null, result.Ptr, DevicePtr.Null, col.Ptr, t: t);
    }

    // ------------------------------------------------------------------ conformance
    private static IEnumerable<ConformanceCase> Conformance()
    {
        foreach (var (name, kernel, stride, pad) in new[] { ("3x3 pad 1", 3, 1, 1), ("3x3 stride 2", 3, 2, 1), ("1x1", 1, 1, 0) })
            yield return new($"Conv {name}", "conv", b =>
                b.Build(b.Node1("Conv", [b.Input(2, 3, 9, 8), b.Const(b.Floats([4, 3, kernel, kernel])), b.Const(b.Floats([4]))],
                    a => { a.Set("strides", new long[] { stride, stride }); a.Set("pads", new long[] { pad, pad, pad, pad }); a.Set("kernel_shape", new long[] { kernel, kernel }); })));
        foreach (var (name, kernel, stride, pad) in new[] { ("3x3", 3, 1, 1), ("3x3 stride 2", 3, 2, 1), ("1x1", 1, 1, 0) })
            yield return new($"train Conv {name} (ConvGradInput, ConvGradWeight)", "conv", b =>
            {
                var x = b.Input(2, 3, 7, 6);
                var w = b.Const(b.Floats([4, 3, kernel, kernel]));
                var bias = b.Const(b.Floats([4]));
                var y = b.Node1("Conv", [x, w, bias], a => { a.Set("strides", new long[] { stride, stride }); a.Set("pads", new long[] { pad, pad, pad, pad }); a.Set("kernel_shape", new long[] { kernel, kernel }); });
                return b.Train(y, [w, bias], [x.Name]);
            }, 1e-4);
    }
}

/// <summary>kernels/conv.cu ConvGeometry (one image).</summary>
[StructLayout(LayoutKind.Sequential)]
public struct ConvGeometryArgs
{
    public int C, H, W, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW;
}

/// <summary>Launchers of kernels/conv.cu around the device GEMM: im2col of the whole batch and one strided-batched GEMM.</summary>
public static class ConvKernels
{
    /// <summary>
    /// Elements of the im2col workspace a convolution needs: every image's columns at once (one strided-batched GEMM
    /// over the images), 0 for a pointwise one (its GEMM reads x in place).
    /// </summary>
    public static long WorkspaceElements(in Conv2dGeometry g) =>
        g.IsPointwise ? 0 : (long)g.Batch * g.InChannels * g.KernelH * g.KernelW * g.OutHeight * g.OutWidth;

    private static ConvGeometryArgs Args(in Conv2dGeometry g)
    {
        if (g.Groups != 1) throw new NotSupportedException("grouped convolution is not implemented on cuda/emu yet");
        if (g.PadTop != g.PadBottom || g.PadLeft != g.PadRight)
            throw new NotSupportedException("asymmetric conv padding: pad with a Pad node first");
        return new ConvGeometryArgs
        {
            C = g.InChannels, H = g.Height, W = g.Width, KH = g.KernelH, KW = g.KernelW, SH = g.StrideH, SW = g.StrideW,
            PH = g.PadTop, PW = g.PadLeft, DH = g.DilationH, DW = g.DilationW, OH = g.OutHeight, OW = g.OutWidth,
        };
    }

    /// <summary>
    /// y = conv(x, w) + bias (bias, fp32, may be null): im2col of all images, then Y_n [Cout, S] = W [Cout, CKK] · col_n
    /// [CKK, S] as one strided-batched GEMM (W shared, stride 0). <paramref name="col"/> holds <see cref="WorkspaceElements"/>
    /// elements of <paramref name="t"/>.
    /// </summary>
    public static void Forward(IKernelDevice d, in Conv2dGeometry g, DevicePtr x, DevicePtr w, DevicePtr bias, DevicePtr y, DevicePtr col, DType t = DType.F32)
    {
        g.Validate();
        var a = Args(g);
        int spatial = g.OutHeight * g.OutWidth, ckk = g.InChannels * g.KernelH * g.KernelW;
        long inImage = (long)g.InChannels * g.Height * g.Width, outImage = (long)g.OutChannels * spatial;
        var src = x;
        long srcStride = inImage;
        if (!g.IsPointwise)
        {
            d.Launch(KernelName("im2col", t), Grid1D((long)g.Batch * ckk * spatial), Block256, 0, new KernelArgs().Ptr(x).Ptr(col).Value(a).I32(g.Batch));
            src = col;
            srcStride = (long)ckk * spatial;
        }
        MatMulKernels.MatMul(d, false, false, g.OutChannels, spatial, ckk, w, src, y, batch: g.Batch, strideA: 0, strideB: srcStride, strideC: outImage, t: t);
        if (!bias.IsNull)
            d.Launch(KernelName("channel_bias_add", t), Grid1D(g.OutputLength), Block256, 0, new KernelArgs().Ptr(y).Ptr(bias).I32(g.Batch).I32(g.OutChannels).I64(spatial));
    }

    /// <summary>
    /// Gradients of <see cref="Forward"/>: dx (overwritten; dcol_n = Wᵀ·dY_n as one strided-batched GEMM, then col2im of
    /// all images), dw (overwritten, or accumulated when <paramref name="accumulate"/>: Σ_n dY_n·col_nᵀ, a GEMM per image
    /// accumulating into the one dw) and dbias (fp32, overwritten); any of them may be null.
    /// </summary>
    public static void Backward(IKernelDevice d, in Conv2dGeometry g, DevicePtr x, DevicePtr w, DevicePtr dy,
        DevicePtr dx, DevicePtr dw, DevicePtr dbias, DevicePtr col, bool accumulate = false, DType t = DType.F32)
    {
        g.Validate();
        var a = Args(g);
        int spatial = g.OutHeight * g.OutWidth, ckk = g.InChannels * g.KernelH * g.KernelW;
        long es = t.Size(), inImage = (long)g.InChannels * g.Height * g.Width, outImage = (long)g.OutChannels * spatial, colImage = (long)ckk * spatial;
        if (!dw.IsNull)
        {
            var src = x;
            long srcStride = inImage;
            if (!g.IsPointwise)
            {
                d.Launch(KernelName("im2col", t), Grid1D((long)g.Batch * ckk * spatial), Block256, 0, new KernelArgs().Ptr(x).Ptr(col).Value(a).I32(g.Batch));
                src = col;
                srcStride = colImage;
            }
            for (int n = 0; n < g.Batch; n++)
                MatMulKernels.MatMul(d, false, true, g.OutChannels, ckk, spatial, dy + n * outImage * es, src + n * srcStride * es, dw,
                    beta: accumulate || n > 0 ? 1 : 0, t: t); // dW += dY_n·col_nᵀ
        }
        if (!dx.IsNull)
        {
            if (g.IsPointwise)
                MatMulKernels.MatMul(d, true, false, ckk, spatial, g.OutChannels, w, dy, dx, batch: g.Batch, strideA: 0, strideB: outImage, strideC: inImage, t: t);
            else
            {
                MatMulKernels.MatMul(d, true, false, ckk, spatial, g.OutChannels, w, dy, col, batch: g.Batch, strideA: 0, strideB: outImage, strideC: colImage, t: t); // dcol = Wᵀ·dY
                d.Launch(KernelName("col2im", t), Grid1D((long)g.Batch * g.InChannels * g.Height * g.Width), Block256, 0, new KernelArgs().Ptr(col).Ptr(dx).Value(a).I32(g.Batch));
            }
        }
        if (!dbias.IsNull)
        {
            if (accumulate) throw new NotSupportedException("accumulating the conv bias gradient: reduce into a scratch buffer and add");
            d.Launch(KernelName("channel_bias_grad", t), new Dim3((uint)g.OutChannels), Block256, 0, new KernelArgs().Ptr(dy).Ptr(dbias).I32(g.Batch).I32(g.OutChannels).I64(spatial));
        }
    }
}
