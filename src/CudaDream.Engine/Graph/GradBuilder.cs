using CudaDream.Engine.Tensors;

namespace CudaDream.Engine.Graph;

/// <summary>
/// Emits backward nodes into the graph during differentiation. Each emitted node is named after the
/// forward node it differentiates (<c>&lt;forward name&gt;/grad/&lt;op&gt;</c>) and keeps its module path;
/// shapes are inferred as nodes are added, so the result is a specialised graph like the forward.
/// </summary>
public sealed class GradBuilder
{
    /// <summary>The op that sums broadcast dimensions away (its home is Ops/Reduce); every broadcasting op's gradient needs it.</summary>
    public const string SumToOp = "SumTo";

    private readonly ComputeGraph _g;
    private int _counter;

    public GradBuilder(ComputeGraph g) => _g = g;

    /// <summary>The forward node being differentiated (names and module paths of emitted nodes follow it).</summary>
    public Node? Current { get; set; }

    public Value[] Emit(string op, IEnumerable<Value?> inputs, Attributes? attributes = null, int outputs = 1)
    {
        string baseName = Current?.Name ?? "/loss";
        string name = $"{baseName}/grad/{op}_{_counter++}";
        var outs = Enumerable.Range(0, outputs).Select(i => new Value($"{name}_output_{i}", DType.F32, null)).ToArray();
        var node = new Node(op, name, inputs, outs, attributes, Current?.Module);
        OpRegistry.InferShapes(node);
        _g.AddNode(node);
        return outs;
    }

    public Value Emit1(string op, IEnumerable<Value?> inputs, Attributes? attributes = null) => Emit(op, inputs, attributes)[0];

    public Value Constant(Tensor t) => new($"/grad/const_{_counter++}", t.DType, t.Shape) { Constant = t };

    public Value Scalar(double v, DType dtype) => Constant(Tensor.FromArray(new[] { v }, Array.Empty<int>()).To(dtype));

    public Value Add(Value a, Value b) => Emit1("Add", new[] { a, b });
    public Value Sub(Value a, Value b) => Emit1("Sub", new[] { a, b });
    public Value Mul(Value a, Value b) => Emit1("Mul", new[] { a, b });
    public Value Div(Value a, Value b) => Emit1("Div", new[] { a, b });
    public Value Neg(Value a) => Emit1("Neg", new[] { a });

    /// <summary>Sums broadcast dimensions away so the gradient has the operand's shape (a no-op when it already has it).</summary>
    public Value SumTo(Value v, int[] shape) =>
        Shapes.Equal(v.Shape!, shape) ? v : Emit1(SumToOp, new[] { v }, new Attributes().Set("shape", shape.Select(d => (long)d).ToArray()));

    public Value Reshape(Value v, int[] shape) =>
        Shapes.Equal(v.Shape!, shape) ? v : Emit1("Reshape", new[] { v, Constant(Tensor.FromArray(shape.Select(d => (long)d).ToArray(), shape.Length)) });

    public Value Transpose(Value v, int[] perm) => Emit1("Transpose", new[] { v }, new Attributes().Set("perm", perm.Select(p => (long)p).ToArray()));

    /// <summary>Swaps the last two dimensions.</summary>
    public Value TransposeLast2(Value v)
    {
        var perm = Enumerable.Range(0, v.Rank).ToArray();
        (perm[^1], perm[^2]) = (perm[^2], perm[^1]);
        return Transpose(v, perm);
    }
}
