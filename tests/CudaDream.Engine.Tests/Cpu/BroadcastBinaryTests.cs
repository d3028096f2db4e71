using CudaDream.Engine.Backends.Cpu;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Ops;
using CudaDream.Engine.Tensors;
using Xunit;
using static CudaDream.Engine.Tests.Cpu.KernelTestSupport;

namespace CudaDream.Engine.Tests.Cpu;

/// <summary>
/// Add/Sub/Mul/Div/Max on the CPU backend against the element-by-element definition with NumPy broadcasting
/// (index arithmetic written out here), bit for bit: the vectorised paths must round exactly as scalar IEEE arithmetic.
/// </summary>
public class BroadcastBinaryTests
{
    public static TheoryData<string, int[], int[]> ShapePairs() => new()
    {
        { "Add", new[] { 3, 5, 7 }, new[] { 3, 5, 7 } },
        { "Sub", new[] { 2, 33 }, new[] { 2, 33 } },
        { "Mul", new[] { 3, 1, 7 }, new[] { 1, 5, 1 } },
        { "Div", new[] { 4, 9 }, new[] { 1 } },
        { "Sub", new[] { 1 }, new[] { 4, 9 } },
        { "Div", new[] { 6 }, new[] { 5, 6 } },
        { "Add", new[] { 2, 3, 4, 5 }, new[] { 3, 1, 1 } },
        { "Max", new[] { 5, 8 }, new[] { 5, 8 } },
    };

    [Theory]
    [MemberData(nameof(ShapePairs))]
    public void Matches_elementwise_definition_bit_for_bit(string op, int[] aShape, int[] bShape)
    {
        int rank = Math.Max(aShape.Length, bShape.Length);
        var outShape = new int[rank];
        for (int i = 0; i < rank; i++) outShape[i] = Math.Max(Dim(aShape, i, rank), Dim(bShape, i, rank));
        var a = RandomFloats(1, (int)Shapes.Numel(aShape), 3);
        var b = RandomFloats(2, (int)Shapes.Numel(bShape), 3);
        for (int i = 0; i < b.Length; i++) if (b[i] == 0) b[i] = 1; // no 0/0
        var y = Tensor.Zeros(DType.F32, outShape);
        var node = new Node(op, op, new[] { new Value("a", DType.F32, aShape), new Value("b", DType.F32, bShape) }, new[] { new Value("y", DType.F32, outShape) });
        CpuOps.Run(node, new Tensor?[] { Tensor.FromArray(a, aShape), Tensor.FromArray(b, bShape) }, new[] { y }, CpuContext.Default);

        var actual = y.ToFloat32Array();
        var index = new int[rank];
        for (int flat = 0; flat < actual.Length; flat++)
        {
            for (int i = rank - 1, rest = flat; i >= 0; i--) { index[i] = rest % outShape[i]; rest /= outShape[i]; }
            float x = a[Offset(aShape, index)], z = b[Offset(bShape, index)];
            float expected = op switch { "Add" => x + z, "Sub" => x - z, "Mul" => x * z, "Div" => x / z, _ => MathF.Max(x, z) };
            Assert.Equal(BitConverter.SingleToInt32Bits(expected), BitConverter.SingleToInt32Bits(actual[flat]));
        }
    }

    private static int Dim(int[] shape, int i, int rank) => i - (rank - shape.Length) is int j && j >= 0 ? shape[j] : 1;

    /// <summary>Row-major offset of a broadcast operand at an output index: size-1 dimensions stay at 0.</summary>
    private static int Offset(int[] shape, int[] index)
    {
        int offset = 0, skip = index.Length - shape.Length;
        for (int i = 0; i < shape.Length; i++) offset = offset * shape[i] + (shape[i] == 1 ? 0 : index[skip + i]);
        return offset;
    }
}
