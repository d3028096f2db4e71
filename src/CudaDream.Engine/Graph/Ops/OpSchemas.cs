using CudaDream.Engine.Tensors;
using static CudaDream.Engine.Graph.Infer;

namespace CudaDream.Engine.Graph.Ops;

/// <summary>
/// The closed set of ops the engine knows: the ONNX ops that SD 1.x exports use (opsets 13–21) and
/// the fused ops the recogniser produces. An op not in this table is an error naming the node.
/// </summary>
/// <summary>Schema facts of an op not yet moved into its home (legacy; being migrated).</summary>
internal sealed record OpSchema(string Name, Action<Node> InferShapes, Func<Node, long>? MultiplyAdds = null, bool Deterministic = true, bool IsView = false);

public static class OpSchemas
{
    internal static readonly Dictionary<string, OpSchema> Table = Build();

    private static Dictionary<string, OpSchema> Build()
    {
        var t = new Dictionary<string, OpSchema>(StringComparer.Ordinal);
        void Add(OpSchema s) => t.Add(s.Name, s);

        // Elementwise, same shape and dtype.
        foreach (var op in new[] { "Sigmoid", "Erf", "Sqrt", "Exp", "Log", "Sin", "Cos", "Neg", "Abs", "Tanh", "Relu", "Reciprocal", "Floor", "Ceil", "Not" })
            Add(new(op, SameAsInput));
        Add(new("Identity", SameAsInput, IsView: true));
        Add(new("Dropout", n => { SameAsInput(n); for (int i = 1; i < n.Outputs.Count; i++) Set(n, i, DType.Bool, ShapeOf(n, 0)); }, IsView: true));
        Add(new("Clip", SameAsInput));
        Add(new("Cast", n => Set(n, 0, CastTarget(n), ShapeOf(n, 0))));
        Add(new("CastLike", n => Set(n, 0, In(n, 1).DType, ShapeOf(n, 0))));

        foreach (var op in new[] { "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Mod" })
            Add(new(op, n => Set(n, 0, In(n, 0).DType, Broadcast(n, n.Inputs.Select((_, i) => ShapeOf(n, i)).ToArray()))));
        foreach (var op in new[] { "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor" })
            Add(new(op, n => Set(n, 0, DType.Bool, Broadcast(n, ShapeOf(n, 0), ShapeOf(n, 1)))));
        Add(new("Where", n => Set(n, 0, In(n, 1).DType, Broadcast(n, ShapeOf(n, 0), ShapeOf(n, 1), ShapeOf(n, 2)))));

        // Shape manipulation.
        Add(new("Shape", InferShape));
        Add(new("Size", n => Set(n, 0, DType.I64, Array.Empty<int>())));
        Add(new("Reshape", InferReshape, IsView: true));
        Add(new("Flatten", InferFlatten, IsView: true));
        Add(new("Unsqueeze", InferUnsqueeze, IsView: true));
        Add(new("Squeeze", InferSqueeze, IsView: true));
        Add(new("Concat", InferConcat));
        Add(new("Gather", InferGather));
        Add(new("Slice", InferSlice));
        Add(new("Split", InferSplit));
        Add(new("Transpose", n =>
        {
            var s = ShapeOf(n, 0);
            var perm = Perm(n, s.Length);
            Set(n, 0, In(n, 0).DType, perm.Select(p => s[p]).ToArray());
        }));
        Add(new("Expand", n => Set(n, 0, In(n, 0).DType, Broadcast(n, ShapeOf(n, 0), ConstInts(n, 1).Select(d => (int)d).ToArray()))));
        Add(new("Tile", n => Set(n, 0, In(n, 0).DType, ShapeOf(n, 0).Zip(ConstInts(n, 1), (d, r) => checked(d * (int)r)).ToArray())));
        Add(new("ConstantOfShape", n =>
        {
            var shape = ConstInts(n, 0).Select(d => d < 0 ? throw new GraphException(n, "negative dimension") : (int)d).ToArray();
            Set(n, 0, n.Attributes.Tensor("value")?.DType ?? DType.F32, shape);
        }));
        Add(new("Range", n =>
        {
            double start = Const(n, 0).ToFloat64Array()[0], limit = Const(n, 1).ToFloat64Array()[0], delta = Const(n, 2).ToFloat64Array()[0];
            if (delta == 0) throw new GraphException(n, "Range with delta 0");
            int count = (int)Math.Max(Math.Ceiling((limit - start) / delta), 0);
            Set(n, 0, In(n, 0).DType, new[] { count });
        }));

        // Reductions.
        foreach (var op in new[] { "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin" })
            Add(new(op, InferReduce));
        Add(new("ArgMax", InferArgReduce));
        Add(new("ArgMin", InferArgReduce));

        // Neural-network ops.

        // Fused ops (FusedOps documents their inputs and attributes).
        // Optional extra outputs hold the statistics the backward pass reuses: mean, rstd.

        Autodiff.GradientOps.AddSchemas(Add);
        return t;
    }

    private static void StatOutputs(Node n, int count)
    {
        for (int i = 1; i < n.Outputs.Count; i++) Set(n, i, In(n, 0).DType, new[] { count });
    }

    private static DType OnnxType(Node n, long onnxType) =>
        DTypes.TryFromOnnx((int)onnxType, out var d) ? d : throw new GraphException(n, $"unsupported element type {onnxType}");

    private static DType CastTarget(Node n) => OnnxType(n, n.Attributes.Int("to"));

    private static void InferShape(Node n)
    {
        int rank = ShapeOf(n, 0).Length;
        long start = n.Attributes.Int("start", 0), end = n.Attributes.Int("end", rank);
        start = Math.Clamp(start < 0 ? start + rank : start, 0, rank);
        end = Math.Clamp(end < 0 ? end + rank : end, 0, rank);
        Set(n, 0, DType.I64, new[] { (int)Math.Max(end - start, 0) });
    }

    /// <summary>ONNX Reshape: 0 copies the input dimension (unless allowzero), -1 is inferred.</summary>
    private static void InferReshape(Node n)
    {
        var input = ShapeOf(n, 0);
        var spec = ConstInts(n, 1);
        bool allowZero = n.Attributes.Int("allowzero", 0) != 0;
        var shape = new int[spec.Length];
        int inferred = -1;
        long known = 1;
        for (int i = 0; i < spec.Length; i++)
        {
            long d = spec[i];
            if (d == 0 && !allowZero)
            {
                if (i >= input.Length) throw new GraphException(n, $"shape {string.Join(",", spec)} copies dimension {i} that the input does not have");
                d = input[i];
            }
            if (d == -1)
            {
                if (inferred >= 0) throw new GraphException(n, "more than one -1 in the target shape");
                inferred = i;
                continue;
            }
            if (d < 0) throw new GraphException(n, $"invalid target dimension {d}");
            shape[i] = (int)d;
            known *= d;
        }
        long total = Shapes.Numel(input);
        if (inferred >= 0)
        {
            if (known == 0 || total % known != 0) throw new GraphException(n, $"cannot reshape {Shapes.Format(input)} to [{string.Join(",", spec)}]");
            shape[inferred] = (int)(total / known);
        }
        else if (known != total) throw new GraphException(n, $"cannot reshape {Shapes.Format(input)} ({total} elements) to {Shapes.Format(shape)}");
        Set(n, 0, In(n, 0).DType, shape);
    }

    private static void InferFlatten(Node n)
    {
        var s = ShapeOf(n, 0);
        long axis = n.Attributes.Int("axis", 1);
        if (axis < 0) axis += s.Length;
        if (axis < 0 || axis > s.Length) throw new GraphException(n, $"axis {axis} out of range");
        long a = 1, b = 1;
        for (int i = 0; i < s.Length; i++) { if (i < axis) a *= s[i]; else b *= s[i]; }
        Set(n, 0, In(n, 0).DType, new[] { checked((int)a), checked((int)b) });
    }

    private static void InferUnsqueeze(Node n)
    {
        var s = ShapeOf(n, 0);
        var axes = Axes(n, 1) ?? throw new GraphException(n, "Unsqueeze without axes");
        int rank = s.Length + axes.Length;
        var norm = axes.Select(a => Axis(n, a, rank)).OrderBy(a => a).ToArray();
        var result = new int[rank];
        int src = 0;
        for (int i = 0; i < rank; i++) result[i] = Array.IndexOf(norm, i) >= 0 ? 1 : s[src++];
        Set(n, 0, In(n, 0).DType, result);
    }

    private static void InferSqueeze(Node n)
    {
        var s = ShapeOf(n, 0);
        var axes = Axes(n, 1);
        HashSet<int> drop = axes == null
            ? Enumerable.Range(0, s.Length).Where(i => s[i] == 1).ToHashSet()
            : axes.Select(a => Axis(n, a, s.Length)).ToHashSet();
        foreach (var a in drop) if (s[a] != 1) throw new GraphException(n, $"cannot squeeze dimension {a} of size {s[a]}");
        Set(n, 0, In(n, 0).DType, s.Where((_, i) => !drop.Contains(i)).ToArray());
    }

    private static void InferConcat(Node n)
    {
        var first = ShapeOf(n, 0);
        int axis = Axis(n, n.Attributes.Int("axis"), first.Length);
        var r = (int[])first.Clone();
        r[axis] = 0;
        for (int i = 0; i < n.Inputs.Count; i++)
        {
            var s = ShapeOf(n, i);
            if (s.Length != first.Length) throw new GraphException(n, "inputs of different ranks");
            for (int d = 0; d < s.Length; d++)
                if (d != axis && s[d] != first[d]) throw new GraphException(n, $"input {i} shape {Shapes.Format(s)} does not match {Shapes.Format(first)} outside axis {axis}");
            r[axis] += s[axis];
        }
        Set(n, 0, In(n, 0).DType, r);
    }

    private static void InferGather(Node n)
    {
        var data = ShapeOf(n, 0);
        var idx = ShapeOf(n, 1);
        int axis = Axis(n, n.Attributes.Int("axis", 0), data.Length);
        var r = data[..axis].Concat(idx).Concat(data[(axis + 1)..]).ToArray();
        Set(n, 0, In(n, 0).DType, r);
    }

    /// <summary>Resolved Slice parameters per axis (ONNX clamping rules), shared with the backends.</summary>
    public static (int[] starts, int[] steps, int[] outShape) ResolveSlice(Node n)
    {
        var s = ShapeOf(n, 0);
        long[] starts, ends;
        long[]? axes, steps;
        if (n.OptionalInput(1) != null)
        {
            starts = ConstInts(n, 1);
            ends = ConstInts(n, 2);
            axes = n.OptionalInput(3) != null ? ConstInts(n, 3) : null;
            steps = n.OptionalInput(4) != null ? ConstInts(n, 4) : null;
        }
        else
        {
            starts = n.Attributes.Ints("starts")!;
            ends = n.Attributes.Ints("ends")!;
            axes = n.Attributes.Ints("axes");
            steps = null;
        }
        var outShape = (int[])s.Clone();
        var st = new int[s.Length];
        var sp = Enumerable.Repeat(1, s.Length).ToArray();
        for (int i = 0; i < starts.Length; i++)
        {
            int axis = axes != null ? Axis(n, axes[i], s.Length) : i;
            long step = steps != null ? steps[i] : 1;
            if (step == 0) throw new GraphException(n, "Slice step 0");
            long dim = s[axis];
            long b = starts[i], e = ends[i];
            if (b < 0) b += dim;
            if (e < 0) e += dim;
            long count;
            if (step > 0)
            {
                b = Math.Clamp(b, 0, dim);
                e = Math.Clamp(e, 0, dim);
                count = Math.Max(0, (e - b + step - 1) / step);
            }
            else
            {
                b = Math.Clamp(b, 0, dim - 1);
                e = Math.Clamp(e, -1, dim - 1);
                count = Math.Max(0, (b - e + (-step) - 1) / (-step));
            }
            st[axis] = (int)b;
            sp[axis] = (int)step;
            outShape[axis] = (int)count;
        }
        return (st, sp, outShape);
    }

    private static void InferSlice(Node n) => Set(n, 0, In(n, 0).DType, ResolveSlice(n).outShape);

    /// <summary>Split sizes along the axis (input 1 in newer opsets, attribute in older, else equal parts).</summary>
    public static (int axis, int[] sizes) ResolveSplit(Node n)
    {
        var s = ShapeOf(n, 0);
        int axis = Axis(n, n.Attributes.Int("axis", 0), s.Length);
        long[]? split = n.OptionalInput(1) != null ? ConstInts(n, 1) : n.Attributes.Ints("split");
        int parts = n.Outputs.Count;
        int[] sizes;
        if (split != null) sizes = split.Select(x => (int)x).ToArray();
        else
        {
            int chunk = (s[axis] + parts - 1) / parts;
            sizes = Enumerable.Range(0, parts).Select(i => Math.Min(chunk, s[axis] - i * chunk)).ToArray();
        }
        if (sizes.Length != parts || sizes.Sum() != s[axis]) throw new GraphException(n, "split sizes do not add up to the dimension");
        return (axis, sizes);
    }

    private static void InferSplit(Node n)
    {
        var s = ShapeOf(n, 0);
        var (axis, sizes) = ResolveSplit(n);
        for (int i = 0; i < sizes.Length; i++)
        {
            var o = (int[])s.Clone();
            o[axis] = sizes[i];
            Set(n, i, In(n, 0).DType, o);
        }
    }

    public static int[] Perm(Node n, int rank)
    {
        var perm = n.Attributes.Ints("perm")?.Select(p => (int)p).ToArray() ?? Enumerable.Range(0, rank).Reverse().ToArray();
        if (perm.Length != rank || perm.Distinct().Count() != rank || perm.Any(p => p < 0 || p >= rank))
            throw new GraphException(n, $"invalid permutation [{string.Join(",", perm)}] for rank {rank}");
        return perm;
    }

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



}
