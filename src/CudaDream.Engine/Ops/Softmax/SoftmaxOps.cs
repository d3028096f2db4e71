using System.Numerics;
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
/// Softmax over the last axis (the unfused attention of exports the fuser does not recognise), and its backward
/// <c>SoftmaxGrad(y, dy)</c> → dx = y ⊙ (dy − Σ dy·y). CPU: <see cref="SoftmaxReference"/>, <see cref="SoftmaxFast"/>;
/// devices: <see cref="SoftmaxKernels"/> (kernels/softmax.cu).
/// </summary>
public static class SoftmaxOps
{
    public const string Softmax = "Softmax";
    public const string SoftmaxGrad = "SoftmaxGrad";

    internal static OpHome Home { get; } = new("Softmax", "softmax.cu",
    [
        new Op
        {
            // In fp32 under mixed precision, as torch.autocast runs softmax: its backward, y ⊙ (dy − Σ dy·y), is a
            // difference of nearly equal numbers that bf16 storage cannot resolve. (The fused attention keeps its softmax in fp32 anyway.)
            Name = Softmax, InferShapes = SameAsInput, Float32Inputs = [0],
            Gradient = (n, dy, need, b) => [b.Emit1(SoftmaxGrad, [n.Output(), dy[0]])],
            Cpu = (n, i, o, c) =>
            {
                var (rows, dim) = Rows(n, i[0]!.Shape);
                Dispatch.Float(n, i[0]!.DType, new ForwardAction(rows, dim, i[0]!, o[0], c));
            },
            Device = s =>
            {
                s.RequireFloat();
                var (rows, cols) = Rows(s.Node, s.InShape(0));
                var (x, y, t) = (s.In(0), s.Out(), s.InType(0));
                return () => { if (rows > 0) SoftmaxKernels.Forward(s.Device, x.Ptr, y.Ptr, rows, cols, t); };
            },
        },
        new Op
        {
            Name = SoftmaxGrad, InferShapes = n => Set(n, 0, In(n, 0).DType, ShapeOf(n, 0)), Float32Inputs = [0, 1],
            Cpu = (n, i, o, c) => Dispatch.Float(n, i[0]!.DType, new BackwardAction(i[0]!, i[1]!, o[0], c)),
            Device = s =>
            {
                s.RequireFloat();
                int cols = s.InShape(0)[^1];
                int rows = cols == 0 ? 0 : checked((int)(s.InCount(0) / cols));
                var (y, dy, dx, t) = (s.In(0), s.In(1), s.Out(), s.InType(0));
                return () => { if (rows > 0) SoftmaxKernels.Backward(s.Device, dy.Ptr, y.Ptr, dx.Ptr, rows, cols, t); };
            },
        },
    ], Conformance);

    /// <summary>(rows, row length) of a softmax over the last axis (the only axis supported).</summary>
    private static (int Rows, int Dim) Rows(Node n, int[] shape)
    {
        if (Shapes.Axis(n.Attributes.Int("axis", -1), shape.Length) != shape.Length - 1) throw new GraphException(n, "Softmax over a non-last axis is not supported");
        int dim = shape[^1];
        return (dim == 0 ? 0 : checked((int)(Shapes.Numel(shape) / dim)), dim);
    }

    public static class Cpu
    {
        public static void Forward<T>(CpuContext c, int rows, int dim, ReadOnlySpan<T> x, Span<T> y) where T : unmanaged, IFloatingPointIeee754<T>
        {
            if (Use<T>(c)) SoftmaxFast.Forward(rows, dim, F(x), F(y));
            else SoftmaxReference.Forward(rows, dim, x, y);
        }

        public static void Backward<T>(CpuContext c, int rows, int dim, ReadOnlySpan<T> y, ReadOnlySpan<T> dy, Span<T> dx) where T : unmanaged, IFloatingPointIeee754<T>
        {
            if (Use<T>(c)) SoftmaxFast.Backward(rows, dim, F(y), F(dy), F(dx));
            else SoftmaxReference.Backward(rows, dim, y, dy, dx);
        }
    }

    private readonly record struct ForwardAction(int Rows, int Dim, Tensor X, Tensor Y, CpuContext C) : IFloatAction
    {
        public void Run<T>() where T : unmanaged, IFloatingPointIeee754<T> => Cpu.Forward<T>(C, Rows, Dim, X.ReadOnlySpan<T>(), Y.Span<T>());
    }

    private readonly record struct BackwardAction(Tensor Y, Tensor Dy, Tensor Dx, CpuContext C) : IFloatAction
    {
        public void Run<T>() where T : unmanaged, IFloatingPointIeee754<T>
        {
            int dim = Y.Shape[^1];
            Cpu.Backward(C, Y.Numel / dim, dim, Y.ReadOnlySpan<T>(), Dy.ReadOnlySpan<T>(), Dx.Span<T>());
        }
    }

    private static IEnumerable<ConformanceCase> Conformance()
    {
        yield return new("Softmax rows of 77 and 300", "softmax", b =>
            b.Build(b.Node1(Softmax, [b.Input(b.Floats([3, 77], -4, 4))]), b.Node1(Softmax, [b.Input(b.Floats([2, 300], -4, 4))])));
        yield return new("train UpsampleNearest, Softmax, Exp, Sqrt, ReduceMean", "resize", b =>
        {
            var x = b.Input(b.Floats([1, 2, 3, 4], 0.5f, 2));
            var up = b.Node1(ResizeOps.UpsampleNearest, [x], a => a.Set("size", new long[] { 6, 8 }));
            var sm = b.Node1(Softmax, [up]);
            var e = b.Node1("Sqrt", [b.Node1("Exp", [sm])]);
            return b.Train(b.Node1("ReduceMean", [e, b.ConstInts(-1)]), [], [x.Name]);
        }, 1e-4);
    }
}

/// <summary>Launchers of kernels/softmax.cu: one row per block.</summary>
public static class SoftmaxKernels
{
    public static void Forward(IKernelDevice d, DevicePtr x, DevicePtr y, int rows, int cols, DType t = DType.F32) =>
        d.Launch(KernelName("softmax_forward", t), new Dim3((uint)rows), RowBlock(cols), 0, new KernelArgs().Ptr(x).Ptr(y).I32(rows).I32(cols));

    public static void Backward(IKernelDevice d, DevicePtr dy, DevicePtr y, DevicePtr dx, int rows, int cols, DType t = DType.F32) =>
        d.Launch(KernelName("softmax_backward", t), new Dim3((uint)rows), RowBlock(cols), 0, new KernelArgs().Ptr(dy).Ptr(y).Ptr(dx).I32(rows).I32(cols));
}
