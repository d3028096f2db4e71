using CudaDream.Engine.Backends.Cpu;
using CudaDream.Engine.Backends.Device;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Tensors;
using static CudaDream.Engine.Graph.Infer;

namespace CudaDream.Engine.Ops;

/// <summary>
/// The elementwise ONNX ops: unary math (Sigmoid … Ceil, Not), broadcast arithmetic (Add … Mod), comparisons and
/// logic (bool results), Where, Clip, Cast/CastLike, Identity and inference Dropout. CPU: <see cref="ElementwiseCpu"/>
/// (generic over element types; vectorised fp32 loops); devices: <see cref="ElementwiseDevice"/> launching
/// <see cref="ElementwiseKernels"/> (kernels/elementwise.cu; Sigmoid, Tanh and Relu run the activation kernel).
/// The gradients of the unary activations are ActivationGrad nodes (Activations home).
/// </summary>
public static class ElementwiseOps
{
    /// <summary>
    /// Ops that run in fp32 under mixed precision, as torch.autocast runs them ("ops that autocast to float32": exp, log,
    /// pow, reciprocal, rsqrt/sqrt): their results or gradients lose too much in bf16 when taken apart (a softmax's
    /// Jacobian, a mean of exponentials).
    /// </summary>
    // Declared before Home: static initialisers run in order, and Home's uses it.
    private static readonly HashSet<string> Float32Ops = ["Exp", "Log", "Pow", "Reciprocal", "Sqrt"];

    internal static OpHome Home { get; } = new("Elementwise", "elementwise.cu", Build(), Conformance);

    private static Op Define(string name, Action<Node> infer, GradRule? gradient = null, bool isView = false) => new()
    {
        Name = name, InferShapes = infer, Gradient = gradient, IsView = isView, Float32Inputs = Float32Ops.Contains(name) ? [0, 1] : [],
        Cpu = ElementwiseCpu.Table[name], Device = ElementwiseDevice.Table.GetValueOrDefault(name),
    };

    private static GradRule Activation(string kind) => (n, dy, need, b) => [ActivationOps.Derivative(n, dy[0]!, b, kind)];

    private static void Broadcasting(Node n) => Set(n, 0, In(n, 0).DType, Broadcast(n, n.Inputs.Select((_, i) => ShapeOf(n, i)).ToArray()));

    private static void BoolBroadcasting(Node n) => Set(n, 0, DType.Bool, Broadcast(n, ShapeOf(n, 0), ShapeOf(n, 1)));

    private static List<Op> Build()
    {
        var ops = new List<Op>
        {
            Define("Sigmoid", SameAsInput, Activation("Sigmoid")),
            Define("Tanh", SameAsInput, Activation("Tanh")),
            Define("Relu", SameAsInput, Activation("Relu")),
            Define("Erf", SameAsInput, Activation("Erf")),
            Define("Exp", SameAsInput, (n, dy, need, b) => [b.Mul(dy[0]!, n.Output())]),
            Define("Sqrt", SameAsInput, (n, dy, need, b) => [b.Div(dy[0]!, b.Mul(n.Output(), b.Scalar(2, n.Output().DType)))]),
            Define("Neg", SameAsInput, (n, dy, need, b) => [b.Neg(dy[0]!)]),
            Define("Add", Broadcasting, (n, dy, need, b) => [b.SumTo(dy[0]!, n.Input(0).Shape!), b.SumTo(dy[0]!, n.Input(1).Shape!)]),
            Define("Sub", Broadcasting, (n, dy, need, b) => [b.SumTo(dy[0]!, n.Input(0).Shape!), need[1] ? b.SumTo(b.Neg(dy[0]!), n.Input(1).Shape!) : null]),
            Define("Mul", Broadcasting, (n, dy, need, b) =>
            [
                need[0] ? b.SumTo(b.Mul(dy[0]!, n.Input(1)), n.Input(0).Shape!) : null,
                need[1] ? b.SumTo(b.Mul(dy[0]!, n.Input(0)), n.Input(1).Shape!) : null,
            ]),
            Define("Div", Broadcasting, (n, dy, need, b) =>
            [
                need[0] ? b.SumTo(b.Div(dy[0]!, n.Input(1)), n.Input(0).Shape!) : null,
                // d(a/b)/db = −a/b² = −y/b
                need[1] ? b.SumTo(b.Neg(b.Div(b.Mul(dy[0]!, n.Output()), n.Input(1))), n.Input(1).Shape!) : null,
            ]),
            Define("Pow", Broadcasting, (n, dy, need, b) =>
            {
                if (Specializer.Uniform(n.Input(1)) != 2.0) throw new GraphException(n, "gradient of Pow is supported for exponent 2 only");
                return [b.Mul(dy[0]!, b.Mul(n.Input(0), b.Scalar(2, n.Input(0).DType))), null];
            }),
            Define("Identity", SameAsInput, PassThrough, isView: true),
            Define("Dropout", n => { SameAsInput(n); for (int i = 1; i < n.Outputs.Count; i++) Set(n, i, DType.Bool, ShapeOf(n, 0)); }, PassThrough, isView: true),
            // clip(x) passes the gradient where it returned x unchanged (inside [min, max], bounds included, as torch.clamp).
            Define("Clip", SameAsInput, (n, dy, need, b) =>
            {
                var r = new Value?[n.Inputs.Count];
                r[0] = b.Emit1("Where", [b.Emit1("Equal", [n.Output(), n.Input(0)]), dy[0], b.Scalar(0, dy[0]!.DType)]);
                return r;
            }),
            Define("Cast", n => Set(n, 0, OnnxType(n, n.Attributes.Int("to")), ShapeOf(n, 0)),
                (n, dy, need, b) => [n.Input(0).DType == dy[0]!.DType ? dy[0] : b.Emit1("Cast", [dy[0]], new Attributes().Set("to", n.Input(0).DType.ToOnnx()))]),
            Define("CastLike", n => Set(n, 0, In(n, 1).DType, ShapeOf(n, 0))),
            Define("Where", n => Set(n, 0, In(n, 1).DType, Broadcast(n, ShapeOf(n, 0), ShapeOf(n, 1), ShapeOf(n, 2)))),
        };
        foreach (var op in new[] { "Log", "Sin", "Cos", "Abs", "Reciprocal", "Floor", "Ceil", "Not" }) ops.Add(Define(op, SameAsInput));
        foreach (var op in new[] { "Max", "Min", "Mod" }) ops.Add(Define(op, Broadcasting));
        foreach (var op in new[] { "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor" }) ops.Add(Define(op, BoolBroadcasting));
        return ops;
    }

    internal static DType OnnxType(Node n, long onnxType) =>
        DTypes.TryFromOnnx((int)onnxType, out var d) ? d : throw new GraphException(n, $"unsupported element type {onnxType}");

    private static Value?[] PassThrough(Node n, Value?[] dy, bool[] need, GradBuilder b) => new[] { dy[0] };

    private static ConformanceCase Case(string name, string family, Func<ConformanceGraphBuilder, ConformanceGraph> build, double tolerance = 1e-5) =>
        new(name, family, build, tolerance);

    private static IEnumerable<ConformanceCase> Conformance()
    {
        var c = new List<ConformanceCase>();
        foreach (var op in new[] { "Add", "Sub", "Mul", "Div", "Max", "Min", "Mod" })
            c.Add(Case($"{op} f32 broadcast", "elementwise", b =>
            {
                var x = b.Input(b.Floats([2, 3, 4], -3, 3));
                var y = b.Input(b.Floats([3, 1], 0.5f, 2));
                return b.Build(b.Node1(op, [x, y]));
            }));
        c.Add(Case("Pow f32 square and general", "elementwise", b =>
        {
            var x = b.Input(b.Floats([3, 5], 0.1f, 2));
            return b.Build(b.Node1("Pow", [x, b.Const(Tensor.FromArray([2f]))]), b.Node1("Pow", [x, b.Const(Tensor.FromArray([0.7f]))]));
        }));
        foreach (var type in new[] { DType.I64, DType.I32 })
            foreach (var op in new[] { "Add", "Sub", "Mul", "Div", "Max", "Min", "Mod" })
                c.Add(Case($"{op} {type} broadcast", "elementwise", b =>
                {
                    var x = b.Input(b.Integers(type, [2, 5], -50, 50));
                    var y = b.Input(b.Integers(type, [5], 1, 9));
                    return b.Build(b.Node1(op, [x, y]));
                }));
        foreach (var op in new[] { "And", "Or", "Xor" })
            c.Add(Case($"{op} bool", "elementwise", b =>
                b.Build(b.Node1(op, [b.Input(b.Integers(DType.Bool, [4, 6], 0, 2)), b.Input(b.Integers(DType.Bool, [6], 0, 2))]))));
        c.Add(Case("Not bool", "elementwise", b => b.Build(b.Node1("Not", [b.Input(b.Integers(DType.Bool, [17], 0, 2))]))));
        foreach (var op in new[] { "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual" })
        {
            c.Add(Case($"{op} f32", "elementwise", b =>
            {
                var x = b.Input(b.Integers(DType.I64, [3, 4], -2, 3).To(DType.F32));
                return b.Build(b.Node1(op, [x, b.Input(b.Integers(DType.I64, [4], -2, 3).To(DType.F32))]));
            }));
            c.Add(Case($"{op} i64", "elementwise", b =>
                b.Build(b.Node1(op, [b.Input(b.Integers(DType.I64, [2, 3, 4], -2, 3)), b.Input(b.Integers(DType.I64, [3, 1], -2, 3))]))));
        }
        c.Add(Case("Where three-way broadcast", "elementwise", b =>
        {
            var cond = b.Input(b.Integers(DType.Bool, [2, 1, 4], 0, 2));
            return b.Build(b.Node1("Where", [cond, b.Input(3, 4), b.Input(2, 3, 1)]));
        }));
        c.Add(Case("Where i64", "elementwise", b =>
            b.Build(b.Node1("Where", [b.Input(b.Integers(DType.Bool, [5], 0, 2)), b.Input(b.Integers(DType.I64, [5], -9, 9)), b.Input(b.Integers(DType.I64, [1], -9, 9))]))));
        foreach (var (from, to) in new[] { (DType.F32, DType.I64), (DType.F32, DType.I32), (DType.I64, DType.F32), (DType.I32, DType.F32), (DType.I32, DType.I64),
                     (DType.I64, DType.I32), (DType.F32, DType.Bool), (DType.I64, DType.Bool), (DType.Bool, DType.F32), (DType.Bool, DType.I64) })
            c.Add(Case($"Cast {from} to {to}", "elementwise", b =>
            {
                var x = from == DType.F32 ? b.Floats([3, 7], -5, 5) : b.Integers(from, [3, 7], from == DType.Bool ? 0 : -5, from == DType.Bool ? 2 : 5);
                return b.Build(b.Node1("Cast", [b.Input(x)], a => a.Set("to", (long)to.ToOnnx())));
            }));
        c.Add(Case("CastLike i64 to f32", "elementwise", b =>
            b.Build(b.Node1("CastLike", [b.Input(b.Integers(DType.I64, [6], -9, 9)), b.Input(1)]))));
        c.Add(Case("Identity and inference Dropout", "layout", b =>
        {
            var x = b.Input(4, 5);
            var d = b.Node("Dropout", [x], 2);
            return b.Build(b.Node1("Identity", [x]), d[0], d[1]);
        }));
        c.Add(Case("Clip", "elementwise", b =>
            b.Build(b.Node1("Clip", [b.Input(b.Floats([40], -3, 3)), b.Const(Tensor.FromArray([-1f])), b.Const(Tensor.FromArray([0.5f]))]))));
        foreach (var op in new[] { "Sigmoid", "Tanh", "Relu", "Erf", "Sqrt", "Exp", "Log", "Sin", "Cos", "Neg", "Abs", "Reciprocal", "Floor", "Ceil" })
            c.Add(Case($"{op} f32", op is "Sigmoid" or "Tanh" or "Relu" ? "activations" : "elementwise", b =>
            {
                bool positive = op is "Sqrt" or "Log" or "Reciprocal";
                return b.Build(b.Node1(op, [b.Input(b.Floats([5, 13], positive ? 0.2f : -3, 3))]));
            }));
        foreach (var op in new[] { "Neg", "Abs", "Relu" })
            c.Add(Case($"{op} i64", "elementwise", b => b.Build(b.Node1(op, [b.Input(b.Integers(DType.I64, [9], -9, 9))]))));
        return c;
    }
}
