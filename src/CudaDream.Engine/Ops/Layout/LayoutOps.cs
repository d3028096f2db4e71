using CudaDream.Engine.Backends.Cpu;
using CudaDream.Engine.Backends.Device;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Tensors;
using static CudaDream.Engine.Graph.Infer;

namespace CudaDream.Engine.Ops;

/// <summary>
/// The data-movement ONNX ops: views (Reshape, Flatten, Squeeze, Unsqueeze), Transpose, Slice, Concat, Split, Expand,
/// Tile, Gather, and the shape ops (Shape, Size, ConstantOfShape, Range) that specialisation folds away. They move bytes
/// of any element type. CPU: <see cref="LayoutCpu"/>; devices: <see cref="LayoutDevice"/>, each op one strided copy
/// (<see cref="LayoutKernels"/>, kernels/layout.cu) or a gather (kernels/gather.cu).
/// </summary>
public static class LayoutOps
{
    internal static OpHome Home { get; } = new("Layout", "layout.cu", Build(), Conformance);

    private static Op Define(string name, Action<Node> infer, GradRule? gradient = null, bool isView = false) => new()
    {
        Name = name, InferShapes = infer, Gradient = gradient, IsView = isView,
        Cpu = LayoutCpu.Table[name], Device = LayoutDevice.Table.GetValueOrDefault(name),
    };

    private static List<Op> Build() =>
    [
        Define("Reshape", InferReshape, ReshapeBack, isView: true),
        Define("Flatten", InferFlatten, ReshapeBack, isView: true),
        Define("Unsqueeze", InferUnsqueeze, ReshapeBack, isView: true),
        Define("Squeeze", InferSqueeze, ReshapeBack, isView: true),
        Define("Transpose", n =>
        {
            var s = ShapeOf(n, 0);
            var perm = Perm(n, s.Length);
            Set(n, 0, In(n, 0).DType, perm.Select(p => s[p]).ToArray());
        }, (n, dy, need, b) =>
        {
            var perm = Perm(n, n.Input(0).Rank);
            var inverse = new int[perm.Length];
            for (int i = 0; i < perm.Length; i++) inverse[perm[i]] = i;
            return [b.Transpose(dy[0]!, inverse)];
        }),
        Define("Slice", InferSlice, Slice),
        Define("Concat", InferConcat, Concat),
        Define("Split", InferSplit),
        Define("Expand", n => Set(n, 0, In(n, 0).DType, Broadcast(n, ShapeOf(n, 0), ConstInts(n, 1).Select(d => (int)d).ToArray())),
            (n, dy, need, b) => [b.SumTo(dy[0]!, n.Input(0).Shape!)]),
        Define("Tile", n => Set(n, 0, In(n, 0).DType, ShapeOf(n, 0).Zip(ConstInts(n, 1), (d, r) => checked(d * (int)r)).ToArray())),
        Define("Gather", InferGather),
        Define("Shape", InferShape),
        Define("Size", n => Set(n, 0, DType.I64, [])),
        Define("ConstantOfShape", n =>
        {
            var shape = ConstInts(n, 0).Select(d => d < 0 ? throw new GraphException(n, "negative dimension") : (int)d).ToArray();
            Set(n, 0, n.Attributes.Tensor("value")?.DType ?? DType.F32, shape);
        }),
        Define("Range", n =>
        {
            double start = Const(n, 0).ToFloat64Array()[0], limit = Const(n, 1).ToFloat64Array()[0], delta = Const(n, 2).ToFloat64Array()[0];
            if (delta == 0) throw new GraphException(n, "Range with delta 0");
            int count = (int)Math.Max(Math.Ceiling((limit - start) / delta), 0);
            Set(n, 0, In(n, 0).DType, [count]);
        }),
    ];

    // ------------------------------------------------------------------ shape rules
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

    // ------------------------------------------------------------------ gradient rules
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
        var (starts, steps, outShape) = ResolveSlice(n);
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

    private static ConformanceCase Case(string name, string family, Func<ConformanceGraphBuilder, ConformanceGraph> build, double tolerance = 1e-5) =>
        new(name, family, build, tolerance);

    private static IEnumerable<ConformanceCase> Conformance()
    {
        var c = new List<ConformanceCase>();
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
        return c;
    }
}
