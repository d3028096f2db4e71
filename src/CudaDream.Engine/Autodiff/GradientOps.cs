using CudaDream.Engine.Graph;
using CudaDream.Engine.Graph.Ops;
using CudaDream.Engine.Tensors;
using static CudaDream.Engine.Graph.Infer;

namespace CudaDream.Engine.Autodiff;

/// <summary>
/// Ops that only the backward pass (and the loss) use. Each backward op pairs with the forward op of
/// the same family; every backend implements both, side by side.
/// <list type="bullet">
/// <item><c>LinearGradWeight(x, dy)</c> → dW in the Linear's weight layout (<c>transB</c>, <c>alpha</c> as the forward).</item>
/// <item><c>SumTo(x)</c>: sums the broadcast dimensions away to <c>shape</c> (the gradient of broadcasting).</item>
/// <item><c>ConvGradInput(dy, w)</c>, <c>ConvGradWeight(x, dy)</c>: Conv's attributes plus <c>input_shape</c> / <c>weight_shape</c>.</item>
/// </list>
/// </summary>
public static class GradientOps
{
    public const string LinearGradWeight = "LinearGradWeight";
    public const string SumTo = "SumTo";
    public const string ConvGradInput = "ConvGradInput";
    public const string ConvGradWeight = "ConvGradWeight";

    internal static void AddSchemas(Action<OpSchema> add)
    {
        add(new(LinearGradWeight, n =>
        {
            var x = ShapeOf(n, 0);
            var dy = ShapeOf(n, 1);
            bool tb = n.Attributes.Int("transB", 0) != 0;
            Set(n, 0, In(n, 0).DType, tb ? new[] { dy[^1], x[^1] } : new[] { x[^1], dy[^1] });
        }, n => Shapes.Numel(ShapeOf(n, 0)) * ShapeOf(n, 1)[^1]));
        add(new(SumTo, n =>
        {
            var target = n.Attributes.Ints("shape")!.Select(d => (int)d).ToArray();
            if (Shapes.Broadcast(target, ShapeOf(n, 0)) is not { } b || !Shapes.Equal(b, ShapeOf(n, 0)))
                throw new GraphException(n, $"cannot sum {Shapes.Format(ShapeOf(n, 0))} to {Shapes.Format(target)}");
            Set(n, 0, In(n, 0).DType, target);
        }));
        add(new(ConvGradInput, n => Set(n, 0, In(n, 0).DType, n.Attributes.Ints("input_shape")!.Select(d => (int)d).ToArray()), ConvGradMacs));
        add(new(ConvGradWeight, n => Set(n, 0, In(n, 0).DType, n.Attributes.Ints("weight_shape")!.Select(d => (int)d).ToArray()), ConvGradMacs));
    }

    private static void ParamGrads(Node n, int channels)
    {
        Set(n, 0, In(n, 0).DType, ShapeOf(n, 0));
        for (int i = 1; i < n.Outputs.Count; i++) Set(n, i, In(n, 0).DType, new[] { channels });
    }

    private static long ConvGradMacs(Node n)
    {
        // The same multiply-adds as the forward: N·Cout·Ho·Wo·(Cin/groups)·kh·kw (w[1] is already Cin/groups).
        var w = n.Attributes.Ints("weight_shape")!;
        var x = n.Attributes.Ints("input_shape")!;
        var dy = n.Op == ConvGradInput ? ShapeOf(n, 0) : ShapeOf(n, 1);
        return x[0] * w[0] * dy[2] * dy[3] * w[1] * w[2] * w[3];
    }
}
