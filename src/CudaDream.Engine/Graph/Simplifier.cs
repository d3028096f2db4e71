using CudaDream.Engine.Tensors;

namespace CudaDream.Engine.Graph;

/// <summary>
/// Algebraic clean-up after folding: identities that exporters leave behind (Identity, Dropout,
/// same-type Cast, same-shape Reshape, +0, ×1, ÷1 — the UNet ends with a Div by 1.0 and adds a zero
/// tensor to every attention score).
/// </summary>
public static class Simplifier
{
    public static int Run(ComputeGraph g)
    {
        int removed = 0;
        foreach (var n in g.Nodes.ToList())
        {
            var passThrough = PassThrough(n);
            if (passThrough == null) continue;
            var output = n.Outputs[0];
            // A graph output keeps its own value (and name).
            if (g.Outputs.Contains(output)) continue;
            if (n.Outputs.Skip(1).Any(o => o.Consumers.Count > 0 || g.Outputs.Contains(o))) continue;
            g.ReplaceAllUses(output, passThrough);
            g.Remove(n);
            removed++;
        }
        return removed;
    }

    /// <summary>The input this node returns unchanged, or null.</summary>
    private static Value? PassThrough(Node n)
    {
        var o = n.Outputs[0];
        switch (n.Op)
        {
            case "Identity":
            case "Dropout":
                return n.Input(0);
            case "Cast":
            case "Reshape":
            case "Squeeze":
            case "Unsqueeze":
            case "Flatten":
                var x = n.Input(0);
                return x.DType == o.DType && x.Shape != null && o.Shape != null && Shapes.Equal(x.Shape, o.Shape) ? x : null;
            case "Add":
                return IdentityOperand(n, 0.0, commutative: true);
            case "Sub":
                return IdentityOperand(n, 0.0, commutative: false);
            case "Mul":
                return IdentityOperand(n, 1.0, commutative: true);
            case "Div":
                return IdentityOperand(n, 1.0, commutative: false);
            default:
                return null;
        }
    }

    /// <summary>For x ∘ c with c uniformly equal to <paramref name="neutral"/> and the result shaped like x, returns x.</summary>
    private static Value? IdentityOperand(Node n, double neutral, bool commutative)
    {
        if (n.Inputs.Count != 2) return null;
        var o = n.Outputs[0];
        for (int side = 0; side < (commutative ? 2 : 1); side++)
        {
            var x = n.Input(side);
            var c = n.Input(1 - side);
            if (x.DType != o.DType || x.Shape == null || o.Shape == null || !Shapes.Equal(x.Shape, o.Shape)) continue;
            if (Specializer.Uniform(c) is double u && u == neutral) return x;
        }
        return null;
    }
}
