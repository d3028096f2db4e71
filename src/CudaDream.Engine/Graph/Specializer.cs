using CudaDream.Engine.Tensors;

namespace CudaDream.Engine.Graph;

/// <summary>Computes a node's outputs from constant inputs (a backend provides it; the graph layer has no math).</summary>
public interface IConstantEvaluator
{
    /// <summary>Evaluates <paramref name="node"/> whose inputs all have <see cref="Value.Constant"/> set; returns one tensor per output.</summary>
    Tensor[] Evaluate(Node node);
}

public sealed record SpecializeOptions
{
    /// <summary>Results above this many elements are not materialised by folding (splats and views excepted).</summary>
    public long MaxFoldElements { get; init; } = 1 << 20;
}

public sealed record SpecializeReport(int FoldedNodes, int RemovedDeadNodes, int RemainingShapeArithmetic);

/// <summary>
/// Specialises a graph to concrete input shapes: shape inference plus constant folding in one
/// topological pass, until no shape arithmetic is left (Shape, Gather on shapes, Unsqueeze, Concat
/// of shape values, ConstantOfShape, Range, Expand/Cast/Where of constants, ...), then dead code removal.
/// </summary>
public static class Specializer
{
    /// <summary>Ops whose only purpose in an exported graph is computing shapes.</summary>
    private static readonly HashSet<string> ShapeOps = new() { "Shape", "Size", "ConstantOfShape", "Range" };

    public static SpecializeReport Specialize(ComputeGraph g, IReadOnlyDictionary<string, int[]> inputShapes, IConstantEvaluator evaluator, SpecializeOptions? options = null)
    {
        options ??= new SpecializeOptions();
        foreach (var name in inputShapes.Keys)
            if (g.Inputs.All(i => i.Name != name)) throw new CudaDreamException($"{g.Source}: the graph has no input named '{name}' (inputs: {string.Join(", ", g.Inputs.Select(i => i.Name))})");
        foreach (var input in g.Inputs)
            input.Shape = ResolveInputShape(g, input, inputShapes.TryGetValue(input.Name, out var s) ? s : null);

        g.SortTopologically();
        int folded = 0;
        foreach (var node in g.Nodes.ToList())
        {
            var schema = OpRegistry.Get(node);
            schema.InferShapes(node);
            if (node.Op is "Shape" or "Size")
            {
                // Only the input's (now static) shape is read, never its data.
                var r = node.Op == "Shape"
                    ? Tensor.FromArray(ShapeSlice(node).Select(d => (long)d).ToArray(), node.Outputs[0].Shape!)
                    : Tensor.FromArray(new[] { node.Input(0).Numel }, Array.Empty<int>());
                node.Outputs[0].Constant = r;
                g.Remove(node);
                folded++;
                continue;
            }
            if (!schema.Deterministic || !node.Inputs.All(i => i == null || i.HasKnownData)) continue;
            if (TryFold(g, node, schema, evaluator, options)) folded++;
        }
        int dead = g.RemoveDeadNodes();
        return new SpecializeReport(folded, dead, CountShapeArithmetic(g));
    }

    private static int[] ShapeSlice(Node n)
    {
        var s = n.Input(0).Shape!;
        int rank = s.Length;
        long start = n.Attributes.Int("start", 0), end = n.Attributes.Int("end", rank);
        start = Math.Clamp(start < 0 ? start + rank : start, 0, rank);
        end = Math.Clamp(end < 0 ? end + rank : end, 0, rank);
        return s[(int)start..(int)Math.Max(start, end)];
    }

    private static int[] ResolveInputShape(ComputeGraph g, Value input, int[]? given)
    {
        var declared = input.Shape;
        if (given == null)
        {
            if (declared != null && declared.All(d => d >= 0)) return declared;
            throw new CudaDreamException($"{g.Source}: input '{input.Name}' has dynamic shape {(declared == null ? "[?]" : Shapes.Format(declared).Replace("-1", "?"))}; give it a concrete shape");
        }
        if (declared != null)
        {
            if (declared.Length != given.Length)
                throw new CudaDreamException($"{g.Source}: input '{input.Name}' has rank {declared.Length}, the given shape {Shapes.Format(given)} has rank {given.Length}");
            for (int i = 0; i < given.Length; i++)
                if (declared[i] >= 0 && declared[i] != given[i])
                    throw new CudaDreamException($"{g.Source}: input '{input.Name}' dimension {i} is fixed at {declared[i]} by the model, given {given[i]}");
        }
        if (given.Any(d => d < 0)) throw new CudaDreamException($"{g.Source}: input '{input.Name}' given a negative dimension");
        return (int[])given.Clone();
    }

    private static bool TryFold(ComputeGraph g, Node node, OpDef schema, IConstantEvaluator evaluator, SpecializeOptions options)
    {
        // Transpose(W) of a weight stays: the fuser turns MatMul(x, Transpose(W)) into Linear(W, transB), so the
        // weight keeps one copy in memory and its name (LoRA, fine-tuning and merges address weights by name).
        if (node.Op == "Transpose" && node.Input(0).IsWeight && node.Input(0).Rank == 2) return false;
        // Likewise a view of a weight (the builder's GroupNorm reshapes γ and β to [C,1,1]): the simplifier drops identities
        // and the fuser reads through reshapes, so the weight stays itself — selectable by train_layers and graph grad --wrt.
        if (schema.IsView && node.Input(0).IsWeight) return false;
        long outElements = node.Outputs.Sum(o => o.Numel);
        bool anySplat = node.Inputs.Any(i => i?.Splat != null);
        if (outElements > options.MaxFoldElements || anySplat)
        {
            if (TryFoldSplat(node, evaluator)) { g.Remove(node); return true; }
            if (!schema.IsView || anySplat) return false; // leave large results to run time
        }
        var results = evaluator.Evaluate(node);
        for (int i = 0; i < node.Outputs.Count; i++)
        {
            var o = node.Outputs[i];
            var r = results[i];
            if (!Shapes.Equal(r.Shape, o.Shape!)) throw new GraphException(node, $"folding produced shape {Shapes.Format(r.Shape)} but inference said {Shapes.Format(o.Shape!)}");
            o.Constant = r;
            o.DType = r.DType;
        }
        g.Remove(node);
        return true;
    }

    /// <summary>
    /// An elementwise op, Expand, Cast or ConstantOfShape over uniform inputs yields a uniform result:
    /// evaluate it on one element and keep the value as a splat instead of materialising it.
    /// </summary>
    private static bool TryFoldSplat(Node node, IConstantEvaluator evaluator)
    {
        if (node.Outputs.Count != 1) return false;
        bool elementwise = node.Op is "Add" or "Sub" or "Mul" or "Div" or "Pow" or "Neg" or "Cast" or "Sqrt" or "Exp" or "Where" or "Equal" or "Less" or "Greater" or "Not" or "Identity";
        var output = node.Outputs[0];
        double? value = null;
        if (node.Op == "ConstantOfShape")
            value = node.Attributes.Tensor("value")?.ToFloat64Array()[0] ?? 0.0;
        else if (node.Op == "Expand" && Uniform(node.Input(0)) is double e)
            value = e;
        else if (elementwise)
        {
            var scalars = new List<Value?>();
            foreach (var i in node.Inputs)
            {
                if (i == null) { scalars.Add(null); continue; }
                if (Uniform(i) is not double u) return false;
                scalars.Add(new Value(i.Name, i.DType, Array.Empty<int>()) { Constant = Tensor.FromArray(new[] { u }, Array.Empty<int>()).To(i.DType) });
            }
            var probe = new Node(node.Op, node.Name, scalars, new[] { new Value(output.Name, output.DType, Array.Empty<int>()) }, node.Attributes);
            value = evaluator.Evaluate(probe)[0].ToFloat64Array()[0];
        }
        if (value == null) return false;
        output.Splat = value;
        return true;
    }

    /// <summary>The common value of a constant whose elements are all equal, else null.</summary>
    public static double? Uniform(Value v)
    {
        if (v.Splat is double s) return s;
        if (v.Constant == null || v.Constant.Numel == 0 || v.Constant.Numel > (1 << 20)) return null;
        var d = v.Constant.ToFloat64Array();
        for (int i = 1; i < d.Length; i++) if (d[i] != d[0] && !(double.IsNaN(d[i]) && double.IsNaN(d[0]))) return null;
        return d[0];
    }

    /// <summary>Nodes left that only compute shapes: shape ops, and integer results of constant inputs.</summary>
    public static int CountShapeArithmetic(ComputeGraph g) =>
        g.Nodes.Count(n => ShapeOps.Contains(n.Op) ||
            (n.Outputs.All(o => o.DType is DType.I64 or DType.I32) && n.Inputs.All(i => i == null || i.IsConstant)));

    /// <summary>Materialises a splat as a tensor (for the rare runtime consumer that needs the data).</summary>
    public static Tensor MaterializeSplat(Value v)
    {
        var t = Tensor.Zeros(DType.F64, v.Shape!);
        t.Span<double>().Fill(v.Splat!.Value);
        return t.To(v.DType);
    }
}
