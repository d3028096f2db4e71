using System.Runtime.InteropServices;
using CudaDream.Engine.Backends;
using CudaDream.Engine.Tensors;
using static CudaDream.Engine.Backends.KernelLaunchers;

namespace CudaDream.Engine.Ops;

/// <summary>device.cuh UnaryOp codes (elementwise.cu and activations.cu).</summary>
public enum UnaryOp
{
    Identity = 0, Neg, Exp, Log, Sqrt, Rsqrt, Sigmoid, Silu, Tanh, Relu, Abs, Erf, Sin, Cos, GeluErf, GeluTanh, QuickGelu,
    Scale, AddScalar, Reciprocal, Square, PowScalar, Floor, Ceil, ClampMin, ClampMax,
}

/// <summary>device.cuh BinaryOp codes (Mod: ONNX Mod, the divisor's sign; And/Or/Xor: bool operands).</summary>
public enum BinaryOp { Add = 0, Sub, Mul, Div, Max, Min, Pow, Mod, And, Or, Xor }

/// <summary>device.cuh CompareOp codes.</summary>
public enum CompareOp { Equal = 0, Less, Greater, LessOrEqual, GreaterOrEqual }

/// <summary>device.cuh BroadcastShape: output shape and per-operand element strides (0 = broadcast).</summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct BroadcastShape
{
    public const int MaxRank = 6;
    public int Rank;
    public fixed int Shape[MaxRank];
    public fixed long StrideA[MaxRank];
    public fixed long StrideB[MaxRank];
}

/// <summary>elementwise.cu WhereShape: output shape and the strides of condition, a and b (0 = broadcast).</summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct WhereShape
{
    public int Rank;
    public fixed int Shape[BroadcastShape.MaxRank];
    /// <summary>[3][MaxRank]: condition, a, b.</summary>
    public fixed long Strides[3 * BroadcastShape.MaxRank];
}

/// <summary>Launchers of kernels/elementwise.cu: unary math, broadcast arithmetic and comparisons, logic, Where, casts.</summary>
public static class ElementwiseKernels
{
    public static void Unary(IKernelDevice d, UnaryOp op, DevicePtr x, DevicePtr y, long n, float alpha = 0, DType t = DType.F32) =>
        d.Launch(KernelName("unary_forward", t), Grid1D(n), Block256, 0, new KernelArgs().I32((int)op).Ptr(x).Ptr(y).I64(n).F32(alpha));

    public static void UnaryBackward(IKernelDevice d, UnaryOp op, DevicePtr x, DevicePtr dy, DevicePtr dx, long n, float alpha = 0, DType t = DType.F32) =>
        d.Launch(KernelName("unary_backward", t), Grid1D(n), Block256, 0, new KernelArgs().I32((int)op).Ptr(x).Ptr(dy).Ptr(dx).I64(n).F32(alpha));

    /// <summary>y = a op b with NumPy broadcasting of the two shapes.</summary>
    public static void Binary(IKernelDevice d, BinaryOp op, DevicePtr a, int[] aShape, DevicePtr b, int[] bShape, DevicePtr y, DType t = DType.F32)
    {
        var (s, n) = Broadcast(aShape, bShape);
        d.Launch(KernelName("binary_forward", t), Grid1D(n), Block256, 0, new KernelArgs().I32((int)op).Ptr(a).Ptr(b).Ptr(y).Value(s).I64(n));
    }

    /// <summary>The kernel geometry of broadcasting two shapes, and the output's element count.</summary>
    internal static unsafe (BroadcastShape Shape, long Count) Broadcast(int[] aShape, int[] bShape)
    {
        var outShape = Shapes.Broadcast(aShape, bShape) ?? throw new ArgumentException($"shapes {Shapes.Format(aShape)} and {Shapes.Format(bShape)} do not broadcast");
        if (outShape.Length > BroadcastShape.MaxRank) throw new NotSupportedException($"broadcast of rank {outShape.Length} > {BroadcastShape.MaxRank}");
        var s = new BroadcastShape { Rank = Math.Max(1, outShape.Length) };
        var sa = BroadcastStrides(aShape, outShape);
        var sb = BroadcastStrides(bShape, outShape);
        if (outShape.Length == 0) { s.Shape[0] = 1; }
        for (int i = 0; i < outShape.Length; i++) { s.Shape[i] = outShape[i]; s.StrideA[i] = sa[i]; s.StrideB[i] = sb[i]; }
        return (s, Shapes.Numel(outShape));
    }

    /// <summary>Neg, Abs or Relu on I32/I64.</summary>
    public static void UnaryInteger(IKernelDevice d, UnaryOp op, DevicePtr x, DevicePtr y, long n, DType t)
    {
        if (op is not (UnaryOp.Neg or UnaryOp.Abs or UnaryOp.Relu)) throw new NotSupportedException($"{op} on integers");
        if (t is not (DType.I32 or DType.I64)) throw new NotSupportedException($"unary {op} on {t}");
        d.Launch("unary_integer_" + IntegerSuffix(t), Grid1D(n), Block256, 0, new KernelArgs().I32((int)op).Ptr(x).Ptr(y).I64(n));
    }

    /// <summary>y = a op b on I32/I64, or And/Or/Xor on bools, with NumPy broadcasting.</summary>
    public static void BinaryInteger(IKernelDevice d, BinaryOp op, DevicePtr a, int[] aShape, DevicePtr b, int[] bShape, DevicePtr y, DType t)
    {
        var (s, n) = Broadcast(aShape, bShape);
        d.Launch("binary_integer_" + IntegerSuffix(t), Grid1D(n), Block256, 0, new KernelArgs().I32((int)op).Ptr(a).Ptr(b).Ptr(y).Value(s).I64(n));
    }

    /// <summary>y (bool) = a op b with NumPy broadcasting; a and b of type <paramref name="t"/> (F32, I32, I64, bool).</summary>
    public static void Compare(IKernelDevice d, CompareOp op, DevicePtr a, int[] aShape, DevicePtr b, int[] bShape, DevicePtr y, DType t)
    {
        var (s, n) = Broadcast(aShape, bShape);
        var name = t.IsFloat() ? KernelName("compare", t) : "compare_" + IntegerSuffix(t);
        d.Launch(name, Grid1D(n), Block256, 0, new KernelArgs().I32((int)op).Ptr(a).Ptr(b).Ptr(y).Value(s).I64(n));
    }

    /// <summary>y = cond ? a : b with three-way NumPy broadcasting; elements of any width.</summary>
    public static unsafe void Where(IKernelDevice d, DevicePtr cond, int[] condShape, DevicePtr a, int[] aShape, DevicePtr b, int[] bShape, DevicePtr y, int elementBytes)
    {
        var outShape = Shapes.Broadcast(Shapes.Broadcast(condShape, aShape) ?? throw new ArgumentException("Where shapes do not broadcast"), bShape)
            ?? throw new ArgumentException("Where shapes do not broadcast");
        if (outShape.Length > BroadcastShape.MaxRank) throw new NotSupportedException($"Where of rank {outShape.Length} > {BroadcastShape.MaxRank}");
        var s = new WhereShape { Rank = Math.Max(1, outShape.Length) };
        s.Shape[0] = 1;
        var operands = new[] { condShape, aShape, bShape };
        for (int o = 0; o < 3; o++)
        {
            var st = BroadcastStrides(operands[o], outShape);
            for (int i = 0; i < outShape.Length; i++) s.Strides[o * BroadcastShape.MaxRank + i] = st[i];
        }
        for (int i = 0; i < outShape.Length; i++) s.Shape[i] = outShape[i];
        long n = Shapes.Numel(outShape);
        d.Launch("where_" + WidthSuffix(elementBytes), Grid1D(n), Block256, 0, new KernelArgs().Ptr(cond).Ptr(a).Ptr(b).Ptr(y).Value(s).I64(n));
    }

    public static void LogicalNot(IKernelDevice d, DevicePtr x, DevicePtr y, long n) =>
        d.Launch("logical_not", Grid1D(n), Block256, 0, new KernelArgs().Ptr(x).Ptr(y).I64(n));

    /// <summary>The cast kernels that exist (elementwise.cu), by (from, to).</summary>
    public static bool CanCast(DType from, DType to) => KernelSources.Exists(CastKernel(from, to));

    /// <summary>y = x converted (ONNX Cast): float to integer truncates, anything to bool is x ≠ 0.</summary>
    public static void Cast(IKernelDevice d, DevicePtr x, DType from, DevicePtr y, DType to, long n)
    {
        if (n == 0) return;
        var name = CastKernel(from, to);
        if (!KernelSources.Exists(name)) throw new NotSupportedException($"no cast kernel from {from} to {to}");
        d.Launch(name, Grid1D(n), Block256, 0, new KernelArgs().Ptr(x).Ptr(y).I64(n));
    }

    private static string CastKernel(DType from, DType to)
    {
        static string Name(DType t) => t switch
        {
            DType.F32 => "f32", DType.F16 => "f16", DType.BF16 => "bf16", DType.I32 => "i32", DType.I64 => "i64",
            DType.U8 or DType.Bool => "u8", _ => t.ToString().ToLowerInvariant(),
        };
        return to == DType.Bool ? $"cast_{Name(from)}_bool" : $"cast_{Name(from)}_{Name(to)}";
    }
}
