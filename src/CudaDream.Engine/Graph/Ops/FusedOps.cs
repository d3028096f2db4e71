using CudaDream.Engine.Tensors;
using static CudaDream.Engine.Graph.Infer;

namespace CudaDream.Engine.Graph.Ops;

/// <summary>
/// The fused ops the pattern recogniser produces. Each is one kernel on every backend and one
/// gradient rule. Inputs and attributes:
/// <list type="bullet">
/// <item><c>Linear(x[...,K], W, bias?)</c>: y = alpha·x·W (+bias); attribute <c>transB</c> = 1 when W is stored [N,K] (torch layout), 0 when [K,N]; <c>alpha</c> defaults to 1 (LoRA's up projection carries its scale here).</item>
/// </list>
/// </summary>
public static class FusedOps
{
    public const string Linear = "Linear";

    public static readonly IReadOnlySet<string> All = new HashSet<string>
    {
        Linear,
    };

    /// <summary>(K, N) of a Linear node's weight.</summary>
    public static (int K, int N) LinearDims(Node n)
    {
        var w = ShapeOf(n, 1);
        if (w.Length != 2) throw new GraphException(n, $"Linear weight must be 2-D, got {Shapes.Format(w)}");
        return n.Attributes.Int("transB", 0) != 0 ? (w[1], w[0]) : (w[0], w[1]);
    }

    internal static void InferLinear(Node n)
    {
        var x = ShapeOf(n, 0);
        var (k, nn) = LinearDims(n);
        if (x[^1] != k) throw new GraphException(n, $"Linear input {Shapes.Format(x)} does not match weight K={k}");
        var o = (int[])x.Clone();
        o[^1] = nn;
        Set(n, 0, In(n, 0).DType, o);
    }

    internal static long LinearMacs(Node n)
    {
        var (k, nn) = LinearDims(n);
        return Shapes.Numel(ShapeOf(n, 0)) / k * k * nn;
    }
}
