using CudaDream.Engine.Graph;
using CudaDream.Engine.Tensors;

namespace CudaDream.Engine.Autodiff;

/// <summary>
/// Reverse-mode differentiation of a specialised graph. Each op's gradient rule (<see cref="OpDef.Gradient"/>, in its home) is
/// applied in reverse topological order to the nodes on a path from a value in <c>wrt</c> to the loss;
/// fan-out is accumulated by adding the contributions. Frozen weights get no gradient and no weight-
/// gradient work: a rule is asked only for the inputs that lead back to <c>wrt</c>.
/// The backward nodes are appended to the graph, so planning and execution treat forward and backward alike.
/// </summary>
public static class Differentiator
{
    /// <summary>Adds backward nodes for d<paramref name="loss"/>/d<paramref name="wrt"/>; returns the gradient value of each wrt value (null when it does not reach the loss).</summary>
    /// <param name="seed">d loss / d loss: the constant 1 by default; a scalar graph input (the fp16 loss scale) scales every gradient.</param>
    public static Dictionary<Value, Value?> Differentiate(ComputeGraph g, Value loss, IReadOnlyCollection<Value> wrt, Value? seed = null)
    {
        foreach (var n in g.Nodes) OpRegistry.Get(n).PrepareForGradient?.Invoke(n);
        var forward = g.Nodes.ToList();
        var requiresGrad = new HashSet<Value>(wrt);
        foreach (var n in forward)
            if (n.Inputs.Any(i => i != null && requiresGrad.Contains(i)))
                foreach (var o in n.Outputs) requiresGrad.Add(o);

        var reachesLoss = new HashSet<Value> { loss };
        for (int i = forward.Count - 1; i >= 0; i--)
        {
            var n = forward[i];
            if (n.Outputs.Any(reachesLoss.Contains))
                foreach (var v in n.Inputs) if (v != null) reachesLoss.Add(v);
        }

        var b = new GradBuilder(g);
        var pending = new Dictionary<Value, List<Value>>();
        pending[loss] = new List<Value> { seed ?? b.Constant(Ones(loss)) };

        for (int i = forward.Count - 1; i >= 0; i--)
        {
            var n = forward[i];
            if (!n.Outputs.Any(o => requiresGrad.Contains(o) && reachesLoss.Contains(o))) continue;
            var needed = n.Inputs.Select(v => v != null && requiresGrad.Contains(v) && reachesLoss.Contains(v)).ToArray();
            if (!needed.Any(x => x)) continue;
            b.Current = n;
            var dy = n.Outputs.Select(o => Accumulate(b, pending, o)).ToArray();
            if (dy.All(d => d == null)) continue;
            if (dy[0] == null) throw new GraphException(n, "gradient reaches only a secondary output");
            SaveStatistics(n);
            var rule = OpRegistry.Get(n).Gradient
                ?? throw new GraphException(n, $"no gradient rule for op '{n.Op}' (it lies between a trainable parameter and the loss)");
            var dx = rule(n, dy, needed, b);
            for (int k = 0; k < n.Inputs.Count; k++)
            {
                if (!needed[k] || k >= dx.Length || dx[k] == null) continue;
                var v = n.Inputs[k]!;
                // Mixed precision: a gradient computed in bf16/fp16 toward an fp32 value (a master parameter in an fp32
                // slot) is cast to the value's type, so its contributions add up in one type.
                if (dx[k]!.DType != v.DType && v.DType.IsFloat() && dx[k]!.DType.IsFloat())
                    dx[k] = b.Emit1("Cast", [dx[k]], new Attributes().Set("to", (long)v.DType.ToOnnx()));
                if (!Shapes.Equal(dx[k]!.Shape!, v.Shape!))
                    throw new GraphException(n, $"gradient rule produced shape {Shapes.Format(dx[k]!.Shape!)} for input {k} of shape {Shapes.Format(v.Shape!)}");
                (pending.TryGetValue(v, out var list) ? list : pending[v] = new List<Value>()).Add(dx[k]!);
            }
        }
        b.Current = null;
        var result = new Dictionary<Value, Value?>();
        foreach (var v in wrt) result[v] = Accumulate(b, pending, v);
        return result;
    }

    /// <summary>Sums the pending gradient contributions of a value into one (fan-out).</summary>
    private static Value? Accumulate(GradBuilder b, Dictionary<Value, List<Value>> pending, Value v)
    {
        if (!pending.TryGetValue(v, out var list) || list.Count == 0) return null;
        var sum = list[0];
        for (int i = 1; i < list.Count; i++) sum = b.Add(sum, list[i]);
        pending[v] = new List<Value> { sum };
        return sum;
    }

    private static Tensor Ones(Value v)
    {
        var t = Tensor.Zeros(DType.F64, v.Shape!);
        t.Span<double>().Fill(1);
        return t.To(v.DType);
    }

    /// <summary>
    /// Ops with <see cref="OpDef.SavedOutputs"/> (normalisations, attention) keep what their backward needs
    /// (mean/rstd, log-sum-exp) as extra outputs of the forward node, instead of recomputing it.
    /// </summary>
    private static void SaveStatistics(Node n)
    {
        int wanted = OpRegistry.Get(n).SavedOutputs;
        if (wanted == 0 || n.Outputs.Count >= wanted) return;
        while (n.Outputs.Count < wanted)
        {
            var stat = new Value($"{n.Name}_saved_{n.Outputs.Count}", n.Input(0).DType, null);
            n.Outputs.Add(stat);
            stat.Producer = n;
        }
        OpRegistry.InferShapes(n);
    }
}
