using CudaDream.Engine.Tensors;

namespace CudaDream.Engine.Graph;

/// <summary>Helpers the ops' shape rules share (used with <c>using static</c>).</summary>
internal static class Infer
{
    public static Value In(Node n, int i) => n.Input(i);

    public static int[] ShapeOf(Node n, int i) =>
        n.Input(i).Shape ?? throw new GraphException(n, $"shape of input {i} ('{n.Input(i).Name}') is unknown");

    /// <summary>The constant contents of input i; shapes that depend on runtime data cannot be specialised.</summary>
    public static Tensor Const(Node n, int i)
    {
        var v = n.Input(i);
        return v.Constant ?? throw new GraphException(n, $"input {i} ('{v.Name}') must be a constant for static shapes, but it is computed at run time");
    }

    public static long[] ConstInts(Node n, int i) => Const(n, i).ToInt64Array();

    public static void Set(Node n, int output, DType dtype, int[] shape)
    {
        var o = n.Outputs[output];
        o.DType = dtype;
        o.Shape = shape;
    }

    /// <summary>
    /// The element type of statistics, losses and the other values kept in fp32 under mixed precision: fp32, or float64
    /// in a double-precision graph (the gradient checks).
    /// </summary>
    public static DType AccumulatorType(DType data) => data == DType.F64 ? DType.F64 : DType.F32;

    public static void SameAsInput(Node n) => Set(n, 0, In(n, 0).DType, (int[])ShapeOf(n, 0).Clone());

    public static int[] Broadcast(Node n, params int[][] shapes)
    {
        var r = shapes[0];
        for (int i = 1; i < shapes.Length; i++)
            r = Shapes.Broadcast(r, shapes[i]) ?? throw new GraphException(n, $"shapes {string.Join(" and ", shapes.Select(s => Shapes.Format(s)))} do not broadcast");
        return r;
    }

    public static int Axis(Node n, long axis, int rank)
    {
        long a = axis < 0 ? axis + rank : axis;
        if (a < 0 || a >= rank) throw new GraphException(n, $"axis {axis} is out of range for rank {rank}");
        return (int)a;
    }

    /// <summary>ONNX axes: from the attribute (older opsets) or the optional input (newer opsets).</summary>
    public static long[]? Axes(Node n, int inputIndex, string attribute = "axes")
    {
        if (n.OptionalInput(inputIndex) != null) return ConstInts(n, inputIndex);
        return n.Attributes.Ints(attribute);
    }
}
