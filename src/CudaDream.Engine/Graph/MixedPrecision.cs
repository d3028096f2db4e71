using CudaDream.Engine.Tensors;

namespace CudaDream.Engine.Graph;

/// <summary>
/// Mixed precision for the kernel devices (DESIGN.md, "Numbers"): rewrites a specialised fp32 graph so activations and
/// frozen weights are stored in bf16 or fp16 while the kernels compute in fp32. What stays fp32 is what each op lists in
/// <see cref="OpDef.Float32Inputs"/> (normalisation parameters and statistics, a convolution's bias, loss weights,
/// timesteps), what its shape rule makes fp32 (statistics, log-sum-exp, the loss), and the trainable parameters given
/// as <c>masters</c>: they keep their fp32 values and every reduced-precision use reads a Cast of them, so their
/// gradients, which flow back through the Cast, arrive in fp32 for the optimizer (the "fp32 master weights" of
/// mixed-precision training, Micikevicius et al. 2018). Run it on the forward graph before differentiation: the backward
/// the differentiator builds then follows the same types. The CPU backend never sees such a graph: it stays the fp32 oracle.
/// </summary>
public static class MixedPrecision
{
    public static bool IsReduced(DType t) => t is DType.BF16 or DType.F16;

    /// <summary>Rewrites <paramref name="g"/> in place to compute in <paramref name="compute"/>; returns how many Casts it inserted.</summary>
    public static int Apply(ComputeGraph g, DType compute, IReadOnlyCollection<Value>? masters = null)
    {
        if (!IsReduced(compute)) throw new ArgumentException($"mixed precision computes in bf16 or fp16, not {compute}", nameof(compute));
        var keep = new HashSet<Value>(masters ?? []);
        g.SortTopologically();

        // Graph inputs and constants take the type their consumers want when they all agree; otherwise they stay fp32
        // and the consumers that want the reduced type read a Cast.
        foreach (var v in g.Inputs.Concat(ConstantsOf(g)).Distinct().ToList())
        {
            if (v.DType != DType.F32 || keep.Contains(v)) continue;
            var wants = v.Consumers.SelectMany(c => Slots(c, v)).Select(slot => Wanted(slot.Node, slot.Index, compute)).Distinct().ToList();
            if (wants.Count != 1 || wants[0] != compute) continue;
            v.DType = compute;
            if (v.Constant != null) v.Constant = v.Constant.To(compute);
        }

        int casts = 0;
        var castOf = new Dictionary<(Value, DType), Value>();
        foreach (var node in g.Nodes.ToList())
        {
            // A Cast reads any type: it is the conversion.
            if (node.Op == "Cast") continue;
            for (int i = 0; i < node.Inputs.Count; i++)
            {
                var v = node.Inputs[i];
                if (v == null || !IsStorageFloat(v.DType)) continue;
                var want = Wanted(node, i, compute);
                if (v.DType == want) continue;
                if (!castOf.TryGetValue((v, want), out var cast))
                {
                    cast = new Value($"{v.Name}/as_{want.ToString().ToLowerInvariant()}", want, (int[]?)v.Shape?.Clone());
                    var castNode = new Node("Cast", $"{v.Name}/Cast_{want.ToString().ToLowerInvariant()}", [v], [cast],
                        new Attributes().Set("to", (long)want.ToOnnx()), v.Producer?.Module ?? node.Module);
                    g.Nodes.Insert(g.Nodes.IndexOf(node), castNode);
                    ComputeGraph.Link(castNode);
                    castOf[(v, want)] = cast;
                    casts++;
                }
                v.Consumers.Remove(node);
                node.Inputs[i] = cast;
                cast.Consumers.Add(node);
            }
            OpRegistry.InferShapes(node);
        }
        return casts;
    }

    /// <summary>The type input <paramref name="index"/> of <paramref name="node"/> is read in: fp32 where the op keeps it, else the compute type.</summary>
    private static DType Wanted(Node node, int index, DType compute) =>
        OpRegistry.Get(node).Float32Inputs.Contains(index) || node.Op == "Cast" ? DType.F32 : compute;

    private static bool IsStorageFloat(DType t) => t is DType.F32 or DType.BF16 or DType.F16;

    private static IEnumerable<(Node Node, int Index)> Slots(Node consumer, Value v)
    {
        for (int i = 0; i < consumer.Inputs.Count; i++)
            if (consumer.Inputs[i] == v) yield return (consumer, i);
    }

    private static IEnumerable<Value> ConstantsOf(ComputeGraph g) =>
        g.Nodes.SelectMany(n => n.Inputs).OfType<Value>().Where(v => v.IsConstant).Distinct();
}
