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
/// The fused activations of SD 1.x and their one backward op:
/// <list type="bullet">
/// <item><c>Gelu(x)</c> (erf form), <c>Silu(x)</c>, <c>QuickGelu(x)</c> = x·σ(1.702x) (CLIP), and <c>Geglu(a[...,2F])</c>:
/// h = a[..., :F], g = a[..., F:], y = h·gelu(g) (diffusers' GEGLU feed-forward).</item>
/// <item><c>ActivationGrad(x, dy)</c> → dx = dy·f′(x), attribute <c>kind</c> = Gelu | Silu | QuickGelu | Geglu | Sigmoid |
/// Tanh | Relu | Erf | Exp | Sqrt | Square (the ONNX unaries of the elementwise home differentiate through it too).</item>
/// <item>CPU: <see cref="ActivationReference"/>, <see cref="ActivationFast"/>; devices: <see cref="ActivationKernels"/>
/// (kernels/activations.cu); conformance cases.</item>
/// </list>
/// </summary>
public static class ActivationOps
{
    public const string Gelu = "Gelu";
    public const string Silu = "Silu";
    public const string QuickGelu = "QuickGelu";
    public const string Geglu = "Geglu";
    public const string ActivationGrad = "ActivationGrad";

    internal static OpHome Home { get; } = new("Activations", "activations.cu",
    [
        Pointwise(Gelu, UnaryOp.GeluErf), Pointwise(Silu, UnaryOp.Silu), Pointwise(QuickGelu, UnaryOp.QuickGelu),
        new Op
        {
            Name = Geglu, InferShapes = n => { var s = (int[])ShapeOf(n, 0).Clone(); s[^1] /= 2; Set(n, 0, In(n, 0).DType, s); },
            Gradient = (n, dy, need, b) => [Derivative(n, dy[0]!, b, Geglu)],
            Cpu = (n, i, o, c) => Dispatch.Float(n, i[0]!.DType, new ForwardAction(n.Op, i[0]!, o[0], c)),
            Device = s =>
            {
                s.RequireFloat();
                int half = s.OutShape()[^1];
                long rows = half == 0 ? 0 : s.OutCount() / half;
                var (x, y, t) = (s.In(0), s.Out(), s.InType(0));
                return () => ActivationKernels.Geglu(s.Device, x.Ptr, y.Ptr, rows, half, t);
            },
        },
        new Op
        {
            Name = ActivationGrad, InferShapes = n => Set(n, 0, In(n, 0).DType, ShapeOf(n, 0)),
            Cpu = (n, i, o, c) => Dispatch.Float(n, i[0]!.DType, new BackwardAction(n, i[0]!, i[1]!, o[0], c)),
            Device = DeviceBackward,
        },
    ], Conformance);

    private static Op Pointwise(string name, UnaryOp code) => new()
    {
        Name = name, InferShapes = SameAsInput,
        Gradient = (n, dy, need, b) => [Derivative(n, dy[0]!, b, name)],
        Cpu = (n, i, o, c) => Dispatch.Float(n, i[0]!.DType, new ForwardAction(n.Op, i[0]!, o[0], c)),
        Device = s =>
        {
            s.RequireFloat();
            var (x, y, n, t) = (s.In(0), s.Out(), s.OutCount(), s.InType(0));
            return () => ActivationKernels.Forward(s.Device, code, x.Ptr, y.Ptr, n, t);
        },
    };

    /// <summary>The gradient of a pointwise op of kind <paramref name="kind"/>: ActivationGrad(x, dy).</summary>
    public static Value Derivative(Node n, Value dy, GradBuilder b, string kind) =>
        b.Emit1(ActivationGrad, [n.Input(0), dy], new Attributes().Set("kind", kind));

    // ------------------------------------------------------------------ CPU
    public static class Cpu
    {
        public static void Gelu<T>(CpuContext c, ReadOnlySpan<T> x, Span<T> y) where T : unmanaged, IFloatingPointIeee754<T>
        {
            if (Use<T>(c)) ActivationFast.Gelu(F(x), F(y));
            else ActivationReference.Gelu(x, y);
        }

        public static void GeluBackward<T>(CpuContext c, ReadOnlySpan<T> x, ReadOnlySpan<T> dy, Span<T> dx) where T : unmanaged, IFloatingPointIeee754<T>
        {
            if (Use<T>(c)) ActivationFast.GeluBackward(F(x), F(dy), F(dx));
            else ActivationReference.GeluBackward(x, dy, dx);
        }

        public static void Geglu<T>(CpuContext c, int rows, int features, ReadOnlySpan<T> x, Span<T> y) where T : unmanaged, IFloatingPointIeee754<T>
        {
            if (Use<T>(c)) ActivationFast.Geglu(rows, features, F(x), F(y));
            else ActivationReference.Geglu(rows, features, x, y);
        }

        public static void GegluBackward<T>(CpuContext c, int rows, int features, ReadOnlySpan<T> x, ReadOnlySpan<T> dy, Span<T> dx) where T : unmanaged, IFloatingPointIeee754<T>
        {
            if (Use<T>(c)) ActivationFast.GegluBackward(rows, features, F(x), F(dy), F(dx));
            else ActivationReference.GegluBackward(rows, features, x, dy, dx);
        }
    }

    private readonly record struct ForwardAction(string Op, Tensor X, Tensor Y, CpuContext C) : IFloatAction
    {
        public void Run<T>() where T : unmanaged, IFloatingPointIeee754<T>
        {
            var x = X.ReadOnlySpan<T>(); var y = Y.Span<T>();
            switch (Op)
            {
                case ActivationOps.Gelu: Cpu.Gelu(C, x, y); break;
                case ActivationOps.Silu: ActivationReference.Silu(x, y); break;
                case ActivationOps.QuickGelu: ActivationReference.QuickGelu(x, y); break;
                case ActivationOps.Geglu:
                    int f = Y.Shape[^1];
                    Cpu.Geglu(C, Y.Numel / Math.Max(f, 1), f, x, y);
                    break;
                default: throw new InvalidOperationException(Op);
            }
        }
    }

    private readonly record struct BackwardAction(Node N, Tensor X, Tensor Dy, Tensor Dx, CpuContext C) : IFloatAction
    {
        public void Run<T>() where T : unmanaged, IFloatingPointIeee754<T>
        {
            var x = X.ReadOnlySpan<T>(); var dy = Dy.ReadOnlySpan<T>(); var dx = Dx.Span<T>();
            var kind = N.Attributes.String("kind", "");
            switch (kind)
            {
                case Gelu: Cpu.GeluBackward(C, x, dy, dx); break;
                case Silu: ActivationReference.SiluBackward(x, dy, dx); break;
                case QuickGelu: ActivationReference.QuickGeluBackward(x, dy, dx); break;
                case Geglu:
                    int f = Dy.Shape[^1];
                    Cpu.GegluBackward(C, Dy.Numel / f, f, x, dy, dx);
                    break;
                case "Sigmoid":
                    for (int i = 0; i < x.Length; i++) { T s = T.One / (T.One + T.Exp(-x[i])); dx[i] = dy[i] * s * (T.One - s); }
                    break;
                case "Tanh":
                    for (int i = 0; i < x.Length; i++) { T t = T.Tanh(x[i]); dx[i] = dy[i] * (T.One - t * t); }
                    break;
                case "Relu":
                    for (int i = 0; i < x.Length; i++) dx[i] = x[i] > T.Zero ? dy[i] : T.Zero;
                    break;
                case "Erf":
                    T c = T.CreateTruncating(2.0 / Math.Sqrt(Math.PI));
                    for (int i = 0; i < x.Length; i++) dx[i] = dy[i] * c * T.Exp(-x[i] * x[i]);
                    break;
                default: throw new GraphException(N, $"unknown activation kind '{kind}'");
            }
        }
    }

    // ------------------------------------------------------------------ devices
    /// <summary>ActivationGrad kinds: the activation kernel's derivative, or the elementwise kernel's.</summary>
    private static readonly Dictionary<string, (UnaryOp Op, bool Activation)> Derivatives = new()
    {
        [Gelu] = (UnaryOp.GeluErf, true), [Silu] = (UnaryOp.Silu, true), [QuickGelu] = (UnaryOp.QuickGelu, true),
        ["Sigmoid"] = (UnaryOp.Sigmoid, true), ["Tanh"] = (UnaryOp.Tanh, true), ["Relu"] = (UnaryOp.Relu, true),
        ["Erf"] = (UnaryOp.Erf, false), ["Exp"] = (UnaryOp.Exp, false), ["Sqrt"] = (UnaryOp.Sqrt, false), ["Square"] = (UnaryOp.Square, false),
    };

    private static Action DeviceBackward(DeviceStepBuilder s)
    {
        s.RequireFloat();
        var kind = s.Node.Attributes.String("kind", "");
        var (x, dy, dx, t) = (s.In(0), s.In(1), s.Out(), s.InType(0));
        if (kind == Geglu)
        {
            int half = s.InShape(1)[^1];
            long rows = half == 0 ? 0 : s.InCount(1) / half;
            return () => ActivationKernels.GegluBackward(s.Device, x.Ptr, dy.Ptr, dx.Ptr, rows, half, t);
        }
        if (!Derivatives.TryGetValue(kind, out var d)) throw new GraphException(s.Node, $"unknown activation kind '{kind}'");
        long n = s.InCount(0);
        if (d.Activation) return () => ActivationKernels.Backward(s.Device, d.Op, x.Ptr, dy.Ptr, dx.Ptr, n, t);
        return () => ElementwiseKernels.UnaryBackward(s.Device, d.Op, x.Ptr, dy.Ptr, dx.Ptr, n, 0, t);
    }

    // ------------------------------------------------------------------ conformance
    private static IEnumerable<ConformanceCase> Conformance()
    {
        foreach (var op in new[] { Gelu, Silu, QuickGelu })
            yield return new(op, "activations", b => b.Build(b.Node1(op, [b.Input(b.Floats([6, 11], -4, 4))])));
        yield return new(Geglu, "activations", b => b.Build(b.Node1(Geglu, [b.Input(b.Floats([3, 4, 10], -3, 3))])));
        foreach (var op in new[] { Gelu, Silu, QuickGelu, "Sigmoid", "Tanh", "Relu", "Erf" })
            yield return new($"train {op} (ActivationGrad)", "activations", b =>
            {
                var x = b.Input(b.Floats([4, 9], -3, 3));
                return b.Train(b.Node1(op, [x]), [], [x.Name]);
            }, 1e-4);
        yield return new("train Geglu", "activations", b =>
        {
            var x = b.Input(b.Floats([2, 3, 8], -3, 3));
            return b.Train(b.Node1(Geglu, [x]), [], [x.Name]);
        }, 1e-4);
    }
}

/// <summary>Launchers of kernels/activations.cu (the element type a parameter; fp32 instantiated today).</summary>
public static class ActivationKernels
{
    /// <summary>SiLU, GELU (erf/tanh), quick_gelu, sigmoid, tanh, ReLU.</summary>
    public static void Forward(IKernelDevice d, UnaryOp op, DevicePtr x, DevicePtr y, long n, DType t = DType.F32) =>
        d.Launch(KernelName("activation_forward", t), Grid1D(n), Block256, 0, new KernelArgs().I32((int)op).Ptr(x).Ptr(y).I64(n));

    public static void Backward(IKernelDevice d, UnaryOp op, DevicePtr x, DevicePtr dy, DevicePtr dx, long n, DType t = DType.F32) =>
        d.Launch(KernelName("activation_backward", t), Grid1D(n), Block256, 0, new KernelArgs().I32((int)op).Ptr(x).Ptr(dy).Ptr(dx).I64(n));

    /// <summary>x [rows, 2·half] = [h | g] → y [rows, half] = h·gelu(g) (diffusers GEGLU).</summary>
    public static void Geglu(IKernelDevice d, DevicePtr x, DevicePtr y, long rows, int half, DType t = DType.F32) =>
        d.Launch(KernelName("geglu_forward", t), Grid1D(rows * half), Block256, 0, new KernelArgs().Ptr(x).Ptr(y).I64(rows).I32(half));

    public static void GegluBackward(IKernelDevice d, DevicePtr x, DevicePtr dy, DevicePtr dx, long rows, int half, DType t = DType.F32) =>
        d.Launch(KernelName("geglu_backward", t), Grid1D(rows * half), Block256, 0, new KernelArgs().Ptr(x).Ptr(dy).Ptr(dx).I64(rows).I32(half));
}
