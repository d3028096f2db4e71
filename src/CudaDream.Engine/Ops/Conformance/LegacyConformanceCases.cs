using CudaDream.Engine.Autodiff;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Graph.Ops;
using CudaDream.Engine.Tensors;

namespace CudaDream.Engine.Ops;

/// <summary>
/// The conformance matrix: every op the kernel devices implement (<see cref="DeviceOps"/>), forward and
/// backward, on shapes that reach every launch path (broadcasting, scattered axes, narrow and wide
/// attention heads, strided and pointwise convolutions, integer index arithmetic). The emu tests run it
/// on every tier; device-check runs it on a GPU.
/// </summary>
internal static class LegacyConformanceCases
{
    private static readonly Lazy<IReadOnlyList<ConformanceCase>> Cases = new(Build);

    public static IReadOnlyList<ConformanceCase> All => Cases.Value;

    private static ConformanceCase Case(string name, string family, Func<ConformanceGraphBuilder, ConformanceGraph> build, double tolerance = 1e-5) =>
        new(name, family, build, tolerance);

    private static IReadOnlyList<ConformanceCase> Build()
    {
        var c = new List<ConformanceCase>();
        Elementwise(c);
        Shapes_(c);
        Reductions(c);
        Nn(c);
        Fused(c);
        Gradients(c);
        return c;
    }

    private static void Elementwise(List<ConformanceCase> c)
    {
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
    }

    private static void Shapes_(List<ConformanceCase> c)
    {
        c.Add(Case("Reshape Flatten Squeeze Unsqueeze", "layout", b =>
        {
            var x = b.Input(2, 1, 3, 4);
            return b.Build(b.Node1("Reshape", [x, b.ConstInts(6, 4)]), b.Node1("Flatten", [x], a => a.Set("axis", 2L)),
                b.Node1("Squeeze", [x, b.ConstInts(1)]), b.Node1("Unsqueeze", [x, b.ConstInts(0)]));
        }));
        c.Add(Case("Shape Size ConstantOfShape Range", "layout", b =>
        {
            var x = b.Input(2, 3, 5);
            return b.Build(b.Node1("Shape", [x]), b.Node1("Size", [x]),
                b.Node1("ConstantOfShape", [b.ConstInts(2, 3)], a => a.Set("value", Tensor.FromArray([7L], 1))),
                b.Node1("Range", [b.Const(Tensor.FromArray([1f])), b.Const(Tensor.FromArray([4f])), b.Const(Tensor.FromArray([0.5f]))]));
        }));
        c.Add(Case("Concat of three along an inner axis", "layout", b =>
            b.Build(b.Node1("Concat", [b.Input(2, 3, 4), b.Input(2, 1, 4), b.Input(2, 5, 4)], a => a.Set("axis", 1L)))));
        c.Add(Case("Concat i64", "layout", b =>
            b.Build(b.Node1("Concat", [b.Input(b.Integers(DType.I64, [2], 0, 9)), b.Input(b.Integers(DType.I64, [3], 0, 9))], a => a.Set("axis", 0L)))));
        c.Add(Case("Gather rows with i64 indices (negative too)", "gather", b =>
        {
            var table = b.Input(7, 5);
            var idx = b.Input(Tensor.FromArray([3L, 0, 6, -1, 3, -7], 2, 3));
            return b.Build(b.Node1("Gather", [table, idx], a => a.Set("axis", 0L)));
        }));
        c.Add(Case("Gather embedding with i32 runtime ids", "gather", b =>
            b.Build(b.Node1("Gather", [b.Const(b.Floats([10, 4])), b.Input(b.Integers(DType.I32, [2, 6], 0, 10))]))));
        c.Add(Case("Gather inner axis from an i64 tensor", "gather", b =>
            b.Build(b.Node1("Gather", [b.Input(b.Integers(DType.I64, [3, 8], -99, 99)), b.Input(Tensor.FromArray([7L, 1], 2))], a => a.Set("axis", 1L)))));
        c.Add(Case("Slice with steps, negative and clamped", "layout", b =>
        {
            var x = b.Input(4, 6, 5);
            return b.Build(
                b.Node1("Slice", [x, b.ConstInts(1, 5, -1), b.ConstInts(4, 0, -100), b.ConstInts(0, 1, 2), b.ConstInts(2, -2, -2)]),
                b.Node1("Slice", [x, b.ConstInts(0), b.ConstInts(3), b.ConstInts(-1)]));
        }));
        c.Add(Case("Split in three", "layout", b =>
        {
            var outs = b.Node("Split", [b.Input(3, 7, 2), b.ConstInts(2, 4, 1)], 3, a => a.Set("axis", 1L));
            return b.Build(outs);
        }));
        c.Add(Case("Transpose 4-D", "layout", b => b.Build(b.Node1("Transpose", [b.Input(2, 3, 4, 5)], a => a.Set("perm", new long[] { 0, 2, 3, 1 })))));
        c.Add(Case("Expand", "layout", b => b.Build(b.Node1("Expand", [b.Input(3, 1), b.ConstInts(2, 3, 4)]))));
        c.Add(Case("Tile", "layout", b => b.Build(b.Node1("Tile", [b.Input(2, 3), b.ConstInts(2, 3)]))));
    }

    private static void Reductions(List<ConformanceCase> c)
    {
        foreach (var op in new[] { "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin" })
            c.Add(Case($"{op} contiguous, scattered and all axes", "reduce", b =>
            {
                var x = b.Input(3, 4, 5, 6);
                return b.Build(b.Node1(op, [x, b.ConstInts(-1)]), b.Node1(op, [x, b.ConstInts(0, 2)], a => a.Set("keepdims", 0L)),
                    b.Node1(op, [x, b.ConstInts(1, 2)]), b.Node1(op, [x], a => a.Set("keepdims", 0L)));
            }));
        c.Add(Case("ReduceSum long scattered rows (block per output)", "reduce", b =>
            b.Build(b.Node1("ReduceSum", [b.Input(40, 3, 50), b.ConstInts(0, 2)]))));
        foreach (var op in new[] { "ArgMax", "ArgMin" })
            c.Add(Case($"{op} first and last ties", "reduce", b =>
            {
                var x = b.Input(b.Integers(DType.I64, [4, 9], 0, 4).To(DType.F32));
                return b.Build(b.Node1(op, [x], a => a.Set("axis", 1L)), b.Node1(op, [x], a => { a.Set("axis", 0L); a.Set("select_last_index", 1L); }));
            }));
        c.Add(Case("ArgMax i32 (CLIP pooling)", "reduce", b =>
            b.Build(b.Node1("ArgMax", [b.Input(b.Integers(DType.I32, [2, 77], 0, 1000))], a => { a.Set("axis", -1L); a.Set("keepdims", 0L); }))));
    }

    private static void Nn(List<ConformanceCase> c)
    {
    }

    private static void Fused(List<ConformanceCase> c)
    {
    }

    private static void Gradients(List<ConformanceCase> c)
    {
    }
}
