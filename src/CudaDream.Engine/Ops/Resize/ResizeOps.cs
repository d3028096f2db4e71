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
/// Nearest-neighbour upsampling (the UNet's and VAE's 2× upsamplers): ONNX <c>Resize</c> in the
/// nearest/asymmetric/floor mode the exports use, the fused <c>UpsampleNearest(x[N,C,H,W])</c> (<c>size</c> = [Ho,Wo];
/// src = floor(dst·in/out)), and <c>UpsampleNearestGrad(dy)</c> → dx of <c>input_shape</c> (each dx the sum of the dy
/// it was copied to). CPU: <see cref="ResizeReference"/>; devices: <see cref="ResizeKernels"/> (kernels/resize.cu).
/// </summary>
public static class ResizeOps
{
    public const string Resize = "Resize";
    public const string UpsampleNearest = "UpsampleNearest";
    public const string UpsampleNearestGrad = "UpsampleNearestGrad";

    internal static OpHome Home { get; } = new("Resize", "resize.cu",
    [
        new Op
        {
            Name = Resize, InferShapes = n => Set(n, 0, In(n, 0).DType, OutputShape(n)),
            Gradient = (n, dy, need, b) =>
            {
                CheckNearest(n);
                var r = new Value?[n.Inputs.Count];
                r[0] = Backward(n, dy[0]!, b);
                return r;
            },
            Cpu = (n, i, o, c) =>
            {
                CheckNearest(n);
                var x = i[0]!;
                if (x.Rank != 4 || x.Shape[0] != o[0].Shape[0] || x.Shape[1] != o[0].Shape[1])
                    throw new GraphException(n, "Resize is supported on the last two dimensions of NCHW tensors only");
                Dispatch.Float(n, x.DType, new ForwardAction(x, o[0]));
            },
            Device = s => { CheckNearest(s.Node); return DeviceForward(s); },
        },
        new Op
        {
            Name = UpsampleNearest,
            InferShapes = n =>
            {
                var s = (int[])ShapeOf(n, 0).Clone();
                var size = n.Attributes.Ints("size")!;
                s[^2] = (int)size[0];
                s[^1] = (int)size[1];
                Set(n, 0, In(n, 0).DType, s);
            },
            Gradient = (n, dy, need, b) => [Backward(n, dy[0]!, b)],
            Cpu = (n, i, o, c) => Dispatch.Float(n, i[0]!.DType, new ForwardAction(i[0]!, o[0])),
            Device = DeviceForward,
        },
        new Op
        {
            Name = UpsampleNearestGrad, InferShapes = n => Set(n, 0, In(n, 0).DType, n.Attributes.Ints("input_shape")!.Select(d => (int)d).ToArray()),
            Cpu = (n, i, o, c) => Dispatch.Float(n, i[0]!.DType, new BackwardAction(i[0]!, o[0])),
            Device = s =>
            {
                s.RequireFloat();
                var (planes, h, w, fy, fx) = Factors(s.Node, s.OutShape(), s.InShape(0));
                var (dy, dx, t) = (s.In(0), s.Out(), s.InType(0));
                return () => ResizeKernels.NearestBackward(s.Device, dy.Ptr, dx.Ptr, planes, h, w, fy, fx, t);
            },
        },
    ], Conformance);

    private static Value Backward(Node n, Value dy, GradBuilder b) =>
        b.Emit1(UpsampleNearestGrad, [dy], new Attributes().Set("input_shape", n.Input(0).Shape!.Select(d => (long)d).ToArray()));

    private static void CheckNearest(Node n)
    {
        var a = n.Attributes;
        var (mode, ctm, nearest) = (a.String("mode", "nearest"), a.String("coordinate_transformation_mode", "half_pixel"), a.String("nearest_mode", "round_prefer_floor"));
        if (mode != "nearest" || ctm != "asymmetric" || nearest != "floor")
            throw new GraphException(n, $"Resize mode={mode}, coordinate_transformation_mode={ctm}, nearest_mode={nearest} is not supported (nearest/asymmetric/floor is)");
    }

    /// <summary>Resize output size from `sizes` or `scales` (NCHW; only the last two dims may change).</summary>
    public static int[] OutputShape(Node n)
    {
        var s = ShapeOf(n, 0);
        int[] o;
        var sizesIn = n.OptionalInput(3);
        var scalesIn = n.OptionalInput(2);
        if (sizesIn != null && (sizesIn.Shape == null || sizesIn.Numel > 0))
            o = ConstInts(n, 3).Select(v => (int)v).ToArray();
        else if (scalesIn != null)
        {
            var scales = Const(n, 2).ToFloat32Array();
            if (scales.Length != s.Length) throw new GraphException(n, "scales rank differs from input rank");
            o = s.Select((d, i) => (int)Math.Floor(d * (double)scales[i])).ToArray();
        }
        else throw new GraphException(n, "Resize without scales or sizes");
        if (o.Length != s.Length) throw new GraphException(n, "sizes rank differs from input rank");
        return o;
    }

    /// <summary>(N·C, H, W, factor y, factor x) of a nearest resize by whole factors of NCHW tensors (the kernels' case).</summary>
    internal static (long Planes, int H, int W, int Fy, int Fx) Factors(Node node, int[] input, int[] output)
    {
        if (input.Length != 4 || input[0] != output[0] || input[1] != output[1])
            throw new GraphException(node, "nearest resize is supported on the last two dimensions of NCHW tensors only");
        if (input[2] == 0 || input[3] == 0 || output[2] % input[2] != 0 || output[3] % input[3] != 0)
            throw new NotSupportedException($"nearest resize from {Shapes.Format(input)} to {Shapes.Format(output)} by a non-integer factor");
        return ((long)input[0] * input[1], input[2], input[3], output[2] / input[2], output[3] / input[3]);
    }

    private readonly record struct ForwardAction(Tensor X, Tensor Y) : IFloatAction
    {
        public void Run<T>() where T : unmanaged, IFloatingPointIeee754<T> =>
            ResizeReference.NearestForward(X.Shape[0], X.Shape[1], X.Shape[2], X.Shape[3], Y.Shape[2], Y.Shape[3], X.ReadOnlySpan<T>(), Y.Span<T>());
    }

    private readonly record struct BackwardAction(Tensor Dy, Tensor Dx) : IFloatAction
    {
        public void Run<T>() where T : unmanaged, IFloatingPointIeee754<T> =>
            ResizeReference.NearestBackward(Dx.Shape[0], Dx.Shape[1], Dx.Shape[2], Dx.Shape[3], Dy.Shape[2], Dy.Shape[3], Dy.ReadOnlySpan<T>(), Dx.Span<T>());
    }

    private static Action DeviceForward(DeviceStepBuilder s)
    {
        s.RequireFloat();
        var (planes, h, w, fy, fx) = Factors(s.Node, s.InShape(0), s.OutShape());
        var (x, y, t) = (s.In(0), s.Out(), s.InType(0));
        return () => ResizeKernels.Nearest(s.Device, x.Ptr, y.Ptr, planes, h, w, fy, fx, t);
    }

    private static IEnumerable<ConformanceCase> Conformance()
    {
        yield return new("Resize nearest x2", "resize", b =>
            b.Build(b.Node1(Resize, [b.Input(1, 2, 3, 4), null, b.Const(Tensor.FromArray([1f, 1, 2, 2], 4))],
                a => { a.Set("mode", "nearest"); a.Set("coordinate_transformation_mode", "asymmetric"); a.Set("nearest_mode", "floor"); })));
        yield return new("UpsampleNearest x2", "resize", b => b.Build(b.Node1(UpsampleNearest, [b.Input(2, 3, 4, 5)], a => a.Set("size", new long[] { 8, 10 }))));
    }
}

/// <summary>Launchers of kernels/resize.cu: nearest upsampling by whole factors.</summary>
public static class ResizeKernels
{
    public static void Nearest(IKernelDevice d, DevicePtr x, DevicePtr y, long nc, int h, int w, int fy, int fx, DType t = DType.F32) =>
        d.Launch(KernelName("resize_nearest_forward", t), Grid1D(nc * h * fy * w * fx), Block256, 0, new KernelArgs().Ptr(x).Ptr(y).I64(nc).I32(h).I32(w).I32(fy).I32(fx));

    public static void NearestBackward(IKernelDevice d, DevicePtr dy, DevicePtr dx, long nc, int h, int w, int fy, int fx, DType t = DType.F32) =>
        d.Launch(KernelName("resize_nearest_backward", t), Grid1D(nc * h * w), Block256, 0, new KernelArgs().Ptr(dy).Ptr(dx).I64(nc).I32(h).I32(w).I32(fy).I32(fx));
}
