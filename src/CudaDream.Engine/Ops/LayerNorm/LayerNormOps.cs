using System.Numerics;
using CudaDream.Engine.Backends;
using CudaDream.Engine.Backends.Cpu;
using CudaDream.Engine.Backends.Device;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Tensors;
using static CudaDream.Engine.Backends.Cpu.CpuOperands;
using static CudaDream.Engine.Backends.Cpu.FastKernels;
using static CudaDream.Engine.Backends.KernelLaunchers;
using static CudaDream.Engine.Graph.Infer;

namespace CudaDream.Engine.Ops;

/// <summary>
/// Layer normalisation (Ba et al. 2016) over the last dimension, forward and backward:
/// <list type="bullet">
/// <item><c>LayerNorm(x[...,D], gamma[D]?, beta[D]?)</c>: <c>epsilon</c>; differentiated, it also outputs mean and rstd per
/// row. <c>LayerNormGrad(x, gamma?, mean, rstd, dy)</c> → dx, dgamma, dbeta. ONNX <c>LayerNormalization</c> (opset 17,
/// any <c>axis</c>, optional fp32 Mean/InvStdDev outputs) runs the same kernels and becomes a LayerNorm before
/// differentiation when it normalises the last axis.</item>
/// <item>CPU: <see cref="LayerNormReference"/>, <see cref="LayerNormFast"/>; devices: <see cref="LayerNormKernels"/>
/// (kernels/layernorm.cu); conformance cases.</item>
/// </list>
/// </summary>
public static class LayerNormOps
{
    public const string LayerNorm = "LayerNorm";
    public const string LayerNormGrad = "LayerNormGrad";
    public const string LayerNormalization = "LayerNormalization";

    internal static OpHome Home { get; } = new("LayerNorm", "layernorm.cu",
    [
        new Op
        {
            Name = LayerNorm, SavedOutputs = 3, Gradient = Gradient, Float32Inputs = [1, 2],
            InferShapes = n => { SameAsInput(n); GroupNormOps.StatisticOutputs(n, (int)(Shapes.Numel(ShapeOf(n, 0)) / Math.Max(1, ShapeOf(n, 0)[^1]))); },
            Cpu = (n, i, o, c) => Dispatch.Float(n, i[0]!.DType, new ForwardAction(n, i, o, c, -1)),
            Device = s => DeviceForward(s, -1),
        },
        new Op
        {
            Name = LayerNormGrad, InferShapes = n => GroupNormOps.ParameterGradients(n, ShapeOf(n, 0)[^1]), Float32Inputs = [1, 2, 3],
            Cpu = (n, i, o, c) => Dispatch.Float(n, i[0]!.DType, new BackwardAction(i, o, c)),
            Device = DeviceBackward,
        },
        new Op
        {
            Name = LayerNormalization, InferShapes = InferLayerNormalization, PrepareForGradient = AsLayerNorm, Float32Inputs = [1, 2],
            Cpu = (n, i, o, c) => Dispatch.Float(n, i[0]!.DType, new ForwardAction(n, i, o, c, n.Attributes.Int("axis", -1))),
            Device = s => DeviceForward(s, s.Node.Attributes.Int("axis", -1)),
        },
    ], Conformance);

    /// <summary>ONNX's optional Mean and InvStdDev outputs are fp32, shaped like x with 1s from the axis on.</summary>
    private static void InferLayerNormalization(Node n)
    {
        SameAsInput(n);
        var s = ShapeOf(n, 0);
        int axis = Axis(n, n.Attributes.Int("axis", -1), s.Length);
        var stat = s.Select((d, i) => i < axis ? d : 1).ToArray();
        for (int i = 1; i < n.Outputs.Count; i++) Set(n, i, DType.F32, stat);
    }

    private static void AsLayerNorm(Node n)
    {
        if (Shapes.Axis(n.Attributes.Int("axis", -1), n.Input(0).Rank) != n.Input(0).Rank - 1 || n.Outputs.Skip(1).Any(o => o.Consumers.Count > 0)) return;
        n.Op = LayerNorm;
        while (n.Outputs.Count > 1) n.Outputs.RemoveAt(n.Outputs.Count - 1);
    }

    private static Value?[] Gradient(Node n, Value?[] dy, bool[] need, GradBuilder b)
    {
        if (n.Outputs.Count < 3) throw new GraphException(n, "LayerNorm has no saved statistics");
        var outs = b.Emit(LayerNormGrad, [n.Input(0), n.OptionalInput(1), n.Outputs[1], n.Outputs[2], dy[0]], null, 3);
        return [outs[0], n.OptionalInput(1) != null ? outs[1] : null, n.OptionalInput(2) != null ? outs[2] : null];
    }

    /// <summary>(rows, D) of a normalisation from <paramref name="axis"/> on (−1: the last dimension).</summary>
    private static (int Rows, int Dim) Rows(int[] shape, long axis)
    {
        int a = Shapes.Axis(axis, shape.Length);
        int dim = checked((int)Shapes.Numel(shape.AsSpan(a)));
        return (dim == 0 ? 0 : (int)(Shapes.Numel(shape) / dim), dim);
    }

    // ------------------------------------------------------------------ CPU
    public static class Cpu
    {
        public static void Forward<T>(CpuContext c, int rows, int dim, T eps, ReadOnlySpan<T> x, ReadOnlySpan<T> gamma, ReadOnlySpan<T> beta, Span<T> y, Span<T> mean, Span<T> rstd)
            where T : unmanaged, IFloatingPointIeee754<T>
        {
            if (Use<T>(c)) LayerNormFast.Forward(rows, dim, F(eps), F(x), F(gamma), F(beta), F(y), F(mean), F(rstd));
            else LayerNormReference.Forward(rows, dim, eps, x, gamma, beta, y, mean, rstd);
        }

        public static void Backward<T>(CpuContext c, int rows, int dim, ReadOnlySpan<T> x, ReadOnlySpan<T> gamma, ReadOnlySpan<T> mean, ReadOnlySpan<T> rstd,
            ReadOnlySpan<T> dy, Span<T> dx, Span<T> dgamma, Span<T> dbeta)
            where T : unmanaged, IFloatingPointIeee754<T>
        {
            if (Use<T>(c)) LayerNormFast.Backward(rows, dim, F(x), F(gamma), F(mean), F(rstd), F(dy), F(dx), F(dgamma), F(dbeta));
            else LayerNormReference.Backward(rows, dim, x, gamma, mean, rstd, dy, dx, dgamma, dbeta);
        }
    }

    /// <summary>
    /// Statistics: into outputs 1 and 2 of a LayerNorm that has them; ONNX LayerNormalization's outputs are fp32
    /// whatever x is, so they are computed in scratch and converted.
    /// </summary>
    private readonly record struct ForwardAction(Node N, Tensor?[] I, Tensor[] O, CpuContext C, long Axis) : IFloatAction
    {
        public void Run<T>() where T : unmanaged, IFloatingPointIeee754<T>
        {
            var x = I[0]!;
            var (rows, dim) = Rows(x.Shape, Axis);
            T eps = T.CreateTruncating(N.Attributes.Float("epsilon", 1e-5f));
            bool direct = N.Op == LayerNorm && O.Length > 2;
            using var ms = Scratch<T>.Rent(direct ? 0 : rows);
            using var rs = Scratch<T>.Rent(direct ? 0 : rows);
            var mean = direct ? O[1].Span<T>() : ms.Span;
            var rstd = direct ? O[2].Span<T>() : rs.Span;
            Cpu.Forward(C, rows, dim, eps, x.ReadOnlySpan<T>(), Optional<T>(I, 1), Optional<T>(I, 2), O[0].Span<T>(), mean, rstd);
            if (direct) return;
            if (O.Length > 1) WriteStatistic(mean, O[1]);
            if (O.Length > 2) WriteStatistic(rstd, O[2]);
        }

        private static void WriteStatistic<T>(Span<T> s, Tensor o) where T : unmanaged, IFloatingPointIeee754<T>
        {
            var d = o.Span<float>();
            for (int k = 0; k < d.Length; k++) d[k] = float.CreateTruncating(s[k]);
        }
    }

    private readonly record struct BackwardAction(Tensor?[] I, Tensor[] O, CpuContext C) : IFloatAction
    {
        public void Run<T>() where T : unmanaged, IFloatingPointIeee754<T>
        {
            var x = I[0]!;
            int dim = x.Shape[^1], rows = x.Numel / dim;
            bool hasGamma = I[1] != null;
            Cpu.Backward(C, rows, dim, x.ReadOnlySpan<T>(), Optional<T>(I, 1), I[2]!.ReadOnlySpan<T>(), I[3]!.ReadOnlySpan<T>(), I[4]!.ReadOnlySpan<T>(),
                O[0].Span<T>(), OptionalOut<T>(O, 1, hasGamma), OptionalOut<T>(O, 2, true));
        }
    }

    // ------------------------------------------------------------------ devices
    /// <summary>Statistics go to the node's outputs 1 and 2 (fp32) when someone reads them, else to scratch.</summary>
    private static Action DeviceForward(DeviceStepBuilder s, long axis)
    {
        s.RequireFloat();
        var (rows, dim) = Rows(s.InShape(0), axis);
        float eps = s.Node.Attributes.Float("epsilon", 1e-5f);
        var t = s.InType(0);
        var (mean, rstd) = (s.OutOrScratch(1, rows * 4L), s.OutOrScratch(2, rows * 4L));
        var (x, gamma, beta, y) = (s.In(0), s.In(1), s.In(2), s.Out());
        return () => { if (rows > 0) LayerNormKernels.Forward(s.Device, x.Ptr, gamma.Ptr, beta.Ptr, y.Ptr, mean.Ptr, rstd.Ptr, rows, dim, eps, t); };
    }

    /// <summary>LayerNormGrad(x, gamma?, mean, rstd, dy) → dx, dgamma, dbeta.</summary>
    private static Action DeviceBackward(DeviceStepBuilder s)
    {
        s.RequireFloat();
        int dim = s.InShape(0)[^1];
        long rows = dim == 0 ? 0 : s.InCount(0) / dim;
        var t = s.InType(0);
        var (x, gamma, mean, rstd, dy) = (s.In(0), s.In(1), s.In(2), s.In(3), s.In(4));
        var (dx, dgamma, dbeta) = (s.Out(0), s.IsUsed(1) ? s.Out(1) : DeviceAddress.Null, s.IsUsed(2) ? s.Out(2) : DeviceAddress.Null);
        return () => { if (rows > 0) LayerNormKernels.Backward(s.Device, x.Ptr, dy.Ptr, gamma.Ptr, mean.Ptr, rstd.Ptr, dx.Ptr, dgamma.Ptr, dbeta.Ptr, rows, dim, t); };
    }

    // ------------------------------------------------------------------ conformance
    private static IEnumerable<ConformanceCase> Conformance()
    {
        yield return new("LayerNormalization with statistics", "layernorm", b =>
            b.Build(b.Node(LayerNormalization, [b.Input(3, 4, 20), b.Const(b.Floats([20])), b.Const(b.Floats([20]))], 3)));
        yield return new("LayerNorm with statistics", "layernorm", b =>
            b.Build(b.Node(LayerNorm, [b.Input(2, 7, 32), b.Const(b.Floats([32])), b.Const(b.Floats([32]))], 3, a => a.Set("epsilon", 1e-5f))));
        yield return new("train LayerNorm", "layernorm", b =>
        {
            var x = b.Input(3, 5, 24);
            var (gamma, beta) = (b.Const(b.Floats([24])), b.Const(b.Floats([24])));
            var y = b.Node(LayerNorm, [x, gamma, beta], 3, a => a.Set("epsilon", 1e-5f))[0];
            return b.Train(y, [gamma, beta], [x.Name]);
        }, 1e-4);
    }
}

/// <summary>Launchers of kernels/layernorm.cu (the element type a parameter; fp32 instantiated today).</summary>
public static class LayerNormKernels
{
    public static void Forward(IKernelDevice d, DevicePtr x, DevicePtr gamma, DevicePtr beta, DevicePtr y, DevicePtr mean, DevicePtr rstd,
        long rows, int dim, float eps, DType t = DType.F32) =>
        d.Launch(KernelName("layernorm_forward", t), new Dim3(checked((uint)rows)), RowBlock(dim), 0,
            new KernelArgs().Ptr(x).Ptr(gamma).Ptr(beta).Ptr(y).Ptr(mean).Ptr(rstd).I64(rows).I32(dim).F32(eps));

    public static void Backward(IKernelDevice d, DevicePtr x, DevicePtr dy, DevicePtr gamma, DevicePtr mean, DevicePtr rstd,
        DevicePtr dx, DevicePtr dgamma, DevicePtr dbeta, long rows, int dim, DType t = DType.F32)
    {
        if (!dx.IsNull)
            d.Launch(KernelName("layernorm_backward_dx", t), new Dim3(checked((uint)rows)), RowBlock(dim), 0,
                new KernelArgs().Ptr(x).Ptr(dy).Ptr(gamma).Ptr(mean).Ptr(rstd).Ptr(dx).I64(rows).I32(dim));
        if (!dgamma.IsNull || !dbeta.IsNull)
            d.Launch(KernelName("layernorm_backward_affine", t), new Dim3((uint)((dim + Threads - 1) / Threads)), Block256, 0,
                new KernelArgs().Ptr(x).Ptr(dy).Ptr(mean).Ptr(rstd).Ptr(dgamma).Ptr(dbeta).I64(rows).I32(dim));
    }
}
