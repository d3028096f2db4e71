using CudaDream.Engine.Graph;
using CudaDream.Engine.Graph.Ops;
using CudaDream.Engine.Tensors;
using static CudaDream.Engine.Graph.Infer;

namespace CudaDream.Engine.Autodiff;

/// <summary>
/// Ops that only the backward pass (and the loss) use. Each backward op pairs with the forward op of
/// the same family; every backend implements both, side by side.
/// <list type="bullet">
/// <item><c>SumTo(x)</c>: sums the broadcast dimensions away to <c>shape</c> (the gradient of broadcasting).</item>
/// </list>
/// </summary>
public static class GradientOps
{
    public const string SumTo = "SumTo";

    internal static void AddSchemas(Action<OpSchema> add)
    {
        add(new(SumTo, n =>
        {
            var target = n.Attributes.Ints("shape")!.Select(d => (int)d).ToArray();
            if (Shapes.Broadcast(target, ShapeOf(n, 0)) is not { } b || !Shapes.Equal(b, ShapeOf(n, 0)))
                throw new GraphException(n, $"cannot sum {Shapes.Format(ShapeOf(n, 0))} to {Shapes.Format(target)}");
            Set(n, 0, In(n, 0).DType, target);
        }));
    }

    private static void ParamGrads(Node n, int channels)
    {
        Set(n, 0, In(n, 0).DType, ShapeOf(n, 0));
        for (int i = 1; i < n.Outputs.Count; i++) Set(n, i, In(n, 0).DType, new[] { channels });
    }

}
