using CudaDream.Engine.Backends.Cpu;
using CudaDream.Engine.Backends.Device;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Tensors;
using static CudaDream.Engine.Graph.Infer;

namespace CudaDream.Engine.Ops;

/// <summary>
/// Reductions: ONNX ReduceMean/Sum/Max/Min over any axes (keepdims, noop_with_empty_axes), ArgMax/ArgMin, and
/// <c>SumTo(x)</c>, which sums broadcast dimensions away to <c>shape</c> — the gradient of every broadcasting op.
/// CPU: <see cref="ReduceCpu"/>; devices: <see cref="ReduceDevice"/> launching <see cref="ReduceKernels"/> (kernels/reduce.cu).
/// </summary>
public static class ReduceOps
{
    public const string SumTo = GradBuilder.SumToOp;

    internal static OpHome Home { get; } = new("Reduce", "reduce.cu", Build(), Conformance);

    /// <summary>Sums and means run in fp32 under mixed precision (torch.autocast's "sum"): a long reduction's result is kept exact to fp32.</summary>
    private static Op Define(string name, Action<Node> infer, GradRule? gradient = null) => new()
    {
        Name = name, InferShapes = infer, Gradient = gradient, Float32Inputs = name is "ReduceSum" or "ReduceMean" ? [0] : [],
        Cpu = ReduceCpu.Table[name], Device = ReduceDevice.Table.GetValueOrDefault(name),
    };

    private static List<Op> Build() =>
    [
        Define("ReduceMean", InferReduce, ReduceMean),
        Define("ReduceSum", InferReduce, ReduceMean),
        Define("ReduceMax", InferReduce),
        Define("ReduceMin", InferReduce),
        Define("ArgMax", InferArgReduce),
        Define("ArgMin", InferArgReduce),
        Define(SumTo, n =>
        {
            var target = n.Attributes.Ints("shape")!.Select(d => (int)d).ToArray();
            if (Shapes.Broadcast(target, ShapeOf(n, 0)) is not { } b || !Shapes.Equal(b, ShapeOf(n, 0)))
                throw new GraphException(n, $"cannot sum {Shapes.Format(ShapeOf(n, 0))} to {Shapes.Format(target)}");
            Set(n, 0, In(n, 0).DType, target);
        }),
    ];

    // ------------------------------------------------------------------ shape rules
    /// <summary>Normalised reduction axes (empty attribute = all axes unless noop_with_empty_axes).</summary>
    public static int[] ReduceAxes(Node n)
    {
        var s = ShapeOf(n, 0);
        var axes = Axes(n, 1);
        if (axes == null || axes.Length == 0)
            return n.Attributes.Int("noop_with_empty_axes", 0) != 0 ? Array.Empty<int>() : Enumerable.Range(0, s.Length).ToArray();
        return axes.Select(a => Axis(n, a, s.Length)).Distinct().OrderBy(a => a).ToArray();
    }

    private static void InferReduce(Node n)
    {
        var s = ShapeOf(n, 0);
        var axes = ReduceAxes(n);
        bool keep = n.Attributes.Int("keepdims", 1) != 0;
        var r = new List<int>();
        for (int i = 0; i < s.Length; i++)
        {
            if (Array.IndexOf(axes, i) < 0) r.Add(s[i]);
            else if (keep) r.Add(1);
        }
        Set(n, 0, In(n, 0).DType, r.ToArray());
    }

    private static void InferArgReduce(Node n)
    {
        var s = ShapeOf(n, 0);
        int axis = Axis(n, n.Attributes.Int("axis", 0), s.Length);
        bool keep = n.Attributes.Int("keepdims", 1) != 0;
        var r = s.Select((d, i) => i == axis ? 1 : d).Where((_, i) => keep || i != axis).ToArray();
        Set(n, 0, DType.I64, r);
    }

    // ------------------------------------------------------------------ gradient rule
    private static long[] Longs(int[] s) => s.Select(d => (long)d).ToArray();

    /// <summary>ReduceMean/ReduceSum: broadcast dy back over the reduced axes (÷ count for the mean).</summary>
    private static Value?[] ReduceMean(Node n, Value?[] dy, bool[] need, GradBuilder b)
    {
        var x = n.Input(0);
        var axes = ReduceAxes(n);
        var kept = x.Shape!.Select((d, i) => axes.Contains(i) ? 1 : d).ToArray();
        var g = b.Reshape(dy[0]!, kept);
        var expanded = b.Emit1("Expand", new[] { g, b.Constant(Tensor.FromArray(Longs(x.Shape!), x.Rank)) });
        if (n.Op == "ReduceMean")
        {
            long count = axes.Aggregate(1L, (acc, a) => acc * x.Shape![a]);
            expanded = b.Div(expanded, b.Scalar(count, x.DType));
        }
        var r = new Value?[n.Inputs.Count];
        r[0] = expanded;
        return r;
    }

    private static ConformanceCase Case(string name, string family, Func<ConformanceGraphBuilder, ConformanceGraph> build, double tolerance = 1e-5) =>
        new(name, family, build, tolerance);

    private static IEnumerable<ConformanceCase> Conformance()
    {
        var c = new List<ConformanceCase>();
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
        return c;
    }
}
