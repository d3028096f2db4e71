using System.Numerics;
using CudaDream.Engine.Backends;
using CudaDream.Engine.Backends.Cpu;
using CudaDream.Engine.Backends.Device;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Tensors;
using static CudaDream.Engine.Backends.KernelLaunchers;
using static CudaDream.Engine.Graph.Infer;

namespace CudaDream.Engine.Ops;

/// <summary>
/// ONNX <c>Pad</c> in constant mode (the VAE pads +1 right and bottom before its stride-2 convs; reflect and edge
/// modes are not used by SD exports). Its gradient is the Slice of dy that the input landed in. The common case —
/// NCHW padded on H and W only — has its own reference (<see cref="PadReference"/>, the CPU oracle) and kernel
/// (<see cref="PadKernels"/>, kernels/pad.cu); any other padding fills the output and copies rows into it.
/// </summary>
public static class PadOps
{
    public const string Pad = "Pad";

    internal static OpHome Home { get; } = new("Pad", "pad.cu",
    [
        new Op { Name = Pad, InferShapes = InferPad, Gradient = Gradient, Cpu = Cpu, Device = DeviceForward },
    ], Conformance);

    public static long[] ResolvePads(Node n)
    {
        var s = ShapeOf(n, 0);
        long[] pads = n.OptionalInput(1) != null ? ConstInts(n, 1) : n.Attributes.Ints("pads") ?? throw new GraphException(n, "Pad without pads");
        if (n.OptionalInput(3) != null)
        {
            // opset 18: pads apply to the listed axes only.
            var axes = ConstInts(n, 3).Select(a => Axis(n, a, s.Length)).ToArray();
            var full = new long[2 * s.Length];
            for (int i = 0; i < axes.Length; i++) { full[axes[i]] = pads[i]; full[axes[i] + s.Length] = pads[i + axes.Length]; }
            pads = full;
        }
        if (pads.Length != 2 * s.Length) throw new GraphException(n, $"pads has {pads.Length} values for rank {s.Length}");
        return pads;
    }

    private static void InferPad(Node n)
    {
        var s = ShapeOf(n, 0);
        var pads = ResolvePads(n);
        var o = s.Select((d, i) => checked((int)(d + pads[i] + pads[i + s.Length]))).ToArray();
        if (o.Any(d => d < 0)) throw new GraphException(n, "negative output size");
        Set(n, 0, In(n, 0).DType, o);
    }

    /// <summary>Checked pads of a constant Pad node (cropping is not supported).</summary>
    private static long[] ConstantPads(Node n)
    {
        var mode = n.Attributes.String("mode", "constant");
        if (mode != "constant") throw new GraphException(n, $"Pad mode '{mode}' is not supported");
        var pads = ResolvePads(n);
        if (pads.Any(p => p < 0)) throw new GraphException(n, "negative pads (cropping) are not supported");
        return pads;
    }

    /// <summary>NCHW padded on H and W only: (top, left, bottom, right); null otherwise.</summary>
    private static (int Top, int Left, int Bottom, int Right)? SpatialPads(long[] pads) =>
        pads.Length == 8 && pads[0] == 0 && pads[1] == 0 && pads[4] == 0 && pads[5] == 0 ? ((int)pads[2], (int)pads[3], (int)pads[6], (int)pads[7]) : null;

    /// <summary>Constant padding: the gradient is dy sliced back to the input's extent.</summary>
    private static Value?[] Gradient(Node n, Value?[] dy, bool[] need, GradBuilder b)
    {
        if (n.Attributes.String("mode", "constant") != "constant") throw new GraphException(n, "gradient of Pad is supported for constant mode only");
        var pads = ResolvePads(n);
        int rank = n.Input(0).Rank;
        var starts = Enumerable.Range(0, rank).Select(d => pads[d]).ToArray();
        var ends = Enumerable.Range(0, rank).Select(d => pads[d] + n.Input(0).Shape![d]).ToArray();
        if (starts.Any(s => s < 0)) throw new GraphException(n, "gradient of a cropping Pad is not supported");
        var r = new Value?[n.Inputs.Count];
        r[0] = b.Emit1("Slice", [dy[0], b.Constant(Tensor.FromArray(starts, rank)), b.Constant(Tensor.FromArray(ends, rank))]);
        return r;
    }

    private static Tensor Value(Tensor?[] i, DType type) => i.Length > 2 && i[2] != null && i[2]!.Numel > 0 ? i[2]!.To(type) : Tensor.Zeros(type, 1);

    // ------------------------------------------------------------------ CPU
    /// <summary>The reference loops for the spatial case when asked for (CpuContext.Reference); otherwise a fill and a row copy per input row.</summary>
    private static void Cpu(Node n, Tensor?[] i, Tensor[] o, CpuContext c)
    {
        var x = i[0]!; var y = o[0];
        var pads = ConstantPads(n);
        if (!c.UseFastKernels && x.DType.IsFloat() && SpatialPads(pads) is { } sp)
        {
            Dispatch.Float(n, x.DType, new ReferenceAction(x, y, Value(i, x.DType), sp));
            return;
        }
        var fill = Value(i, x.DType).Data.Span[..x.DType.Size()];
        var dst = y.Data.Span;
        for (int k = 0; k < dst.Length; k += fill.Length) fill.CopyTo(dst[k..]);
        int r = x.Rank, es = x.DType.Size();
        var yStrides = Shapes.Strides(y.Shape);
        int inner = x.Shape[r - 1];
        long rows = inner == 0 ? 0 : x.Numel / inner;
        var src = x.Data.Span;
        for (long row = 0; row < rows; row++)
        {
            long rem = row, off = pads[r - 1];
            for (int d = r - 2; d >= 0; d--) { off += (rem % x.Shape[d] + pads[d]) * yStrides[d]; rem /= x.Shape[d]; }
            src.Slice((int)(row * inner * es), inner * es).CopyTo(dst.Slice((int)(off * es), inner * es));
        }
    }

    private readonly record struct ReferenceAction(Tensor X, Tensor Y, Tensor Value, (int Top, int Left, int Bottom, int Right) P) : IFloatAction
    {
        public void Run<T>() where T : unmanaged, IFloatingPointIeee754<T> =>
            PadReference.ConstantForward(X.Shape[0], X.Shape[1], X.Shape[2], X.Shape[3], P.Top, P.Left, P.Bottom, P.Right, Value.ReadOnlySpan<T>()[0], X.ReadOnlySpan<T>(), Y.Span<T>());
    }

    // ------------------------------------------------------------------ devices
    /// <summary>The spatial fp32 case is one kernel; any other: fill the output with the pad value, then copy the input into its interior.</summary>
    private static Action DeviceForward(DeviceStepBuilder s)
    {
        var pads = ConstantPads(s.Node);
        var type = s.OutType();
        var value = Value([null, null, s.HasInput(2) && s.InCount(2) > 0 ? s.HostConstant(2) : null], type);
        var inShape = s.InShape(0);
        var (x, y, n) = (s.In(0), s.Out(), s.OutCount());
        if (type == DType.F32 && SpatialPads(pads) is { } p)
        {
            float v = value.ToFloat32Array()[0];
            return () => PadKernels.Spatial(s.Device, x.Ptr, y.Ptr, (long)inShape[0] * inShape[1], inShape[2], inShape[3], p.Top, p.Bottom, p.Left, p.Right, v, type);
        }
        var pattern = value.Data[..type.Size()].ToArray();
        var outShape = s.OutShape();
        var outStrides = Shapes.Strides(outShape);
        long interior = 0;
        for (int d = 0; d < outShape.Length; d++) interior += pads[d] * outStrides[d];
        var copy = LayoutDevice.Copy(s, s.In(0), 0, Shapes.Strides(inShape), y, interior, outStrides, inShape);
        return () =>
        {
            FillPattern(s.Device, y.Ptr, n, pattern);
            copy();
        };
    }

    private static IEnumerable<ConformanceCase> Conformance()
    {
        yield return new("Pad constant 4-D (spatial kernel)", "pad", b =>
            b.Build(b.Node1(Pad, [b.Input(1, 2, 3, 4), b.ConstInts(0, 0, 0, 2, 0, 0, 1, 1), b.Const(Tensor.FromArray([0.25f]))])));
        yield return new("Pad constant 4-D (fill and copy)", "layout", b =>
            b.Build(b.Node1(Pad, [b.Input(1, 2, 3, 4), b.ConstInts(0, 1, 0, 2, 0, 0, 1, 1), b.Const(Tensor.FromArray([0.25f]))])));
        yield return new("train Pad (Slice back)", "pad", b =>
        {
            var x = b.Input(2, 3, 4, 5);
            return b.Train(b.Node1(Pad, [x, b.ConstInts(0, 0, 0, 0, 0, 0, 1, 1)]), [], [x.Name]);
        }, 1e-4);
    }
}

/// <summary>Launcher of kernels/pad.cu.</summary>
public static class PadKernels
{
    /// <summary>y [NC, top+H+bottom, left+W+right] = x placed at (top, left), <paramref name="value"/> around it (pads ≥ 0).</summary>
    public static void Spatial(IKernelDevice d, DevicePtr x, DevicePtr y, long nc, int h, int w, int top, int bottom, int left, int right, float value = 0, DType t = DType.F32) =>
        d.Launch(KernelName("pad2d_forward", t), Grid1D(nc * (h + top + bottom) * (w + left + right)), Block256, 0,
            new KernelArgs().Ptr(x).Ptr(y).I64(nc).I32(h).I32(w).I32(top).I32(bottom).I32(left).I32(right).F32(value));
}
