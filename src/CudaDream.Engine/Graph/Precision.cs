using CudaDream.Engine.Tensors;

namespace CudaDream.Engine.Graph;

/// <summary>
/// The engine's backends compute in fp32 (DESIGN.md: mixed precision is a later CUDA feature), so a graph
/// stored in fp16 or bf16 (e.g. <c>cudadream import --dtype fp16</c>) is widened on load: weights and
/// constants converted once, casts to half types retargeted to fp32, half inputs and outputs made fp32
/// (the executor converts what callers pass in).
/// </summary>
public static class Precision
{
    public static bool HasHalfTypes(ComputeGraph g) => g.AllValues().Any(v => IsHalf(v.DType)) || g.Weights.Values.Any(v => IsHalf(v.DType));

    /// <summary>Rewrites the graph in place; returns how many values were widened.</summary>
    public static int UpcastToFloat32(ComputeGraph g)
    {
        int widened = 0;
        var values = g.AllValues().Concat(g.Weights.Values).Distinct().ToList();
        foreach (var v in values)
        {
            if (!IsHalf(v.DType)) continue;
            v.DType = DType.F32;
            if (v.Constant != null) v.Constant = v.Constant.To(DType.F32);
            widened++;
        }
        foreach (var n in g.Nodes)
        {
            if (n.Op == "Cast" && DTypes.TryFromOnnx((int)n.Attributes.Int("to", 1), out var to) && IsHalf(to)) n.Attributes.Set("to", (long)DType.F32.ToOnnx());
            if (n.Attributes.Tensor("value") is { } t && IsHalf(t.DType)) n.Attributes.Set("value", t.To(DType.F32));
            if (n.Attributes.Has("dtype") && DTypes.TryFromOnnx((int)n.Attributes.Int("dtype"), out var dt) && IsHalf(dt)) n.Attributes.Set("dtype", (long)DType.F32.ToOnnx());
        }
        return widened;
    }

    private static bool IsHalf(DType t) => t is DType.F16 or DType.BF16;
}
