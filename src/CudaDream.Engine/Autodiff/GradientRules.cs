using CudaDream.Engine.Graph;
using CudaDream.Engine.Graph.Ops;
using CudaDream.Engine.Ops;
using CudaDream.Engine.Tensors;

namespace CudaDream.Engine.Autodiff;


/// <summary>
/// The gradient rules, one per op, as a table a reader can scan (tinygrad style). Rules build backward
/// nodes out of forward ops where they can (the gradient of a Linear input is a Linear) and out of the
/// backward ops of <see cref="GradientOps"/> where a fused kernel does it better.
/// </summary>
public static class GradientRules
{
    internal static readonly Dictionary<string, GradRule> Table = new(StringComparer.Ordinal)
    {
        // ---- fused ops ----

        // ---- ONNX ops ----
        ["Add"] = (n, dy, need, b) => new[] { b.SumTo(dy[0]!, n.Input(0).Shape!), b.SumTo(dy[0]!, n.Input(1).Shape!) },
        ["Sub"] = (n, dy, need, b) => new[] { b.SumTo(dy[0]!, n.Input(0).Shape!), need[1] ? b.SumTo(b.Neg(dy[0]!), n.Input(1).Shape!) : null },
        ["Mul"] = (n, dy, need, b) => new[]
        {
            need[0] ? b.SumTo(b.Mul(dy[0]!, n.Input(1)), n.Input(0).Shape!) : null,
            need[1] ? b.SumTo(b.Mul(dy[0]!, n.Input(0)), n.Input(1).Shape!) : null,
        },
        ["Div"] = (n, dy, need, b) => new[]
        {
            need[0] ? b.SumTo(b.Div(dy[0]!, n.Input(1)), n.Input(0).Shape!) : null,
            // d(a/b)/db = −a/b² = −y/b
            need[1] ? b.SumTo(b.Neg(b.Div(b.Mul(dy[0]!, n.Output()), n.Input(1))), n.Input(1).Shape!) : null,
        },
        ["Neg"] = (n, dy, need, b) => new[] { b.Neg(dy[0]!) },
        ["Identity"] = PassThrough,
        ["Dropout"] = PassThrough,
        ["Cast"] = (n, dy, need, b) => new[] { n.Input(0).DType == dy[0]!.DType ? dy[0] : b.Emit1("Cast", new[] { dy[0] }, new Attributes().Set("to", n.Input(0).DType.ToOnnx())) },
        ["Reshape"] = ReshapeBack,
        ["Flatten"] = ReshapeBack,
        ["Squeeze"] = ReshapeBack,
        ["Unsqueeze"] = ReshapeBack,
        ["Transpose"] = (n, dy, need, b) =>
        {
            var perm = OpSchemas.Perm(n, n.Input(0).Rank);
            var inverse = new int[perm.Length];
            for (int i = 0; i < perm.Length; i++) inverse[perm[i]] = i;
            return new[] { b.Transpose(dy[0]!, inverse) };
        },
        ["Expand"] = (n, dy, need, b) => new[] { b.SumTo(dy[0]!, n.Input(0).Shape!) },
        // clip(x) passes the gradient where it returned x unchanged (inside [min, max], bounds included, as torch.clamp).
        ["Clip"] = (n, dy, need, b) =>
        {
            var r = new Value?[n.Inputs.Count];
            r[0] = b.Emit1("Where", new[] { b.Emit1("Equal", new[] { n.Output(), n.Input(0) }), dy[0], b.Scalar(0, dy[0]!.DType) });
            return r;
        },
        ["Concat"] = Concat,
        ["Slice"] = Slice,
        ["Sigmoid"] = (n, dy, need, b) => new[] { ActivationOps.Derivative(n, dy[0]!, b, "Sigmoid") },
        ["Tanh"] = (n, dy, need, b) => new[] { ActivationOps.Derivative(n, dy[0]!, b, "Tanh") },
        ["Relu"] = (n, dy, need, b) => new[] { ActivationOps.Derivative(n, dy[0]!, b, "Relu") },
        ["Erf"] = (n, dy, need, b) => new[] { ActivationOps.Derivative(n, dy[0]!, b, "Erf") },
        ["Exp"] = (n, dy, need, b) => new[] { b.Mul(dy[0]!, n.Output()) },
        ["Sqrt"] = (n, dy, need, b) => new[] { b.Div(dy[0]!, b.Mul(n.Output(), b.Scalar(2, n.Output().DType))) },
        ["Pow"] = (n, dy, need, b) =>
        {
            if (Specializer.Uniform(n.Input(1)) != 2.0) throw new GraphException(n, "gradient of Pow is supported for exponent 2 only");
            return new[] { b.Mul(dy[0]!, b.Mul(n.Input(0), b.Scalar(2, n.Input(0).DType))), null };
        },
        ["ReduceMean"] = ReduceMean,
        ["ReduceSum"] = ReduceMean,
    };

    public static bool Has(string op) => Table.ContainsKey(op);
    public static IReadOnlyCollection<string> Ops => Table.Keys;

    public static GradRule Get(Node n) =>
        Table.TryGetValue(n.Op, out var r) ? r : throw new GraphException(n, $"no gradient rule for op '{n.Op}' (it lies between a trainable parameter and the loss)");

    private static long[] Longs(int[] s) => s.Select(d => (long)d).ToArray();

    private static Value?[] PassThrough(Node n, Value?[] dy, bool[] need, GradBuilder b) => new[] { dy[0] };

    private static Value?[] ReshapeBack(Node n, Value?[] dy, bool[] need, GradBuilder b)
    {
        var r = new Value?[n.Inputs.Count];
        r[0] = b.Reshape(dy[0]!, n.Input(0).Shape!);
        return r;
    }



    private static Value?[] Concat(Node n, Value?[] dy, bool[] need, GradBuilder b)
    {
        int axis = Shapes.Axis(n.Attributes.Int("axis"), n.Output().Rank);
        var r = new Value?[n.Inputs.Count];
        long offset = 0;
        for (int i = 0; i < n.Inputs.Count; i++)
        {
            int size = n.Input(i).Shape![axis];
            if (need[i])
                r[i] = b.Emit1("Slice", new[]
                {
                    dy[0], b.Constant(Tensor.FromArray(new[] { offset }, 1)), b.Constant(Tensor.FromArray(new[] { offset + size }, 1)),
                    b.Constant(Tensor.FromArray(new long[] { axis }, 1)),
                });
            offset += size;
        }
        return r;
    }

    /// <summary>Slice with unit steps: the gradient is dy zero-padded back to the input's extent.</summary>
    private static Value?[] Slice(Node n, Value?[] dy, bool[] need, GradBuilder b)
    {
        var (starts, steps, outShape) = OpSchemas.ResolveSlice(n);
        if (steps.Any(s => s != 1)) throw new GraphException(n, "gradient of a strided Slice is not supported");
        var inShape = n.Input(0).Shape!;
        var pads = new long[2 * inShape.Length];
        for (int d = 0; d < inShape.Length; d++)
        {
            pads[d] = starts[d];
            pads[d + inShape.Length] = inShape[d] - starts[d] - outShape[d];
        }
        var r = new Value?[n.Inputs.Count];
        r[0] = b.Emit1("Pad", new[] { dy[0], b.Constant(Tensor.FromArray(pads, pads.Length)) }, new Attributes().Set("mode", "constant"));
        return r;
    }

    /// <summary>ReduceMean/ReduceSum: broadcast dy back over the reduced axes (÷ count for the mean).</summary>
    private static Value?[] ReduceMean(Node n, Value?[] dy, bool[] need, GradBuilder b)
    {
        var x = n.Input(0);
        var axes = OpSchemas.ReduceAxes(n);
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
}
