using CudaDream.Engine.Backends.Cpu.Kernels;
using CudaDream.Engine.Tensors;

namespace CudaDream.Engine.Backends;

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

public enum ReduceOp { Sum = 0, Mean = 1, Max = 2, SumOfSquares = 3, Min = 4 }

/// <summary>
/// Typed launchers of kernels/*.cu, written once against <see cref="IKernelDevice"/> so the cuda
/// and emu backends run identical host code. Each method implements the launcher contract in the
/// header comment of its kernel file (grid, block, shared memory, argument order). Pointers are
/// device addresses (arena base + offset); shapes are element counts. fp32 today: the dtype
/// parameter selects the instantiation, so fp16/bf16 need only new CD_EXPORT lines.
/// </summary>
public static partial class KernelLaunchers
{
    internal const int Threads = 256;
    internal static readonly Dim3 Block256 = new(Threads);

    internal static Dim3 Grid1D(long n) => new((uint)Math.Clamp((n + Threads - 1) / Threads, 1, 4096));

    /// <summary>
    /// Block for a kernel that reduces one row per block: the row length rounded up to whole warps, at
    /// most 256, so short rows (LayerNorm over 32 channels, softmax over 77 keys) leave no thread idle.
    /// </summary>
    internal static Dim3 RowBlock(long rowLength) => new((uint)Math.Clamp((rowLength + 31) / 32 * 32, 32, Threads));

    private static string Suffix(DType t) => t switch
    {
        DType.F32 => "f32",
        _ => throw new NotSupportedException($"kernels for {t} are not instantiated yet (fp32 only)"),
    };

    /// <summary>The exported name of kernel <paramref name="stem"/> instantiated for element type <paramref name="t"/> ("attention_forward_f32").</summary>
    public static string KernelName(string stem, DType t) => stem + "_" + Suffix(t);

    // ------------------------------------------------------------------ elementwise.cu, activations.cu
    public static void Unary(IKernelDevice d, UnaryOp op, DevicePtr x, DevicePtr y, long n, float alpha = 0, DType t = DType.F32) =>
        d.Launch("unary_forward_" + Suffix(t), Grid1D(n), Block256, 0, new KernelArgs().I32((int)op).Ptr(x).Ptr(y).I64(n).F32(alpha));

    public static void UnaryBackward(IKernelDevice d, UnaryOp op, DevicePtr x, DevicePtr dy, DevicePtr dx, long n, float alpha = 0, DType t = DType.F32) =>
        d.Launch("unary_backward_" + Suffix(t), Grid1D(n), Block256, 0, new KernelArgs().I32((int)op).Ptr(x).Ptr(dy).Ptr(dx).I64(n).F32(alpha));

    /// <summary>y = a op b with NumPy broadcasting of the two shapes.</summary>
    public static void Binary(IKernelDevice d, BinaryOp op, DevicePtr a, int[] aShape, DevicePtr b, int[] bShape, DevicePtr y, DType t = DType.F32)
    {
        var (s, n) = Broadcast(aShape, bShape);
        d.Launch("binary_forward_" + Suffix(t), Grid1D(n), Block256, 0, new KernelArgs().I32((int)op).Ptr(a).Ptr(b).Ptr(y).Value(s).I64(n));
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

    internal static long[] BroadcastStrides(int[] shape, int[] outShape)
    {
        var own = Shapes.Strides(shape);
        var r = new long[outShape.Length];
        int off = outShape.Length - shape.Length;
        for (int i = 0; i < shape.Length; i++) r[off + i] = shape[i] == 1 ? 0 : own[i];
        return r;
    }

    public static void Fill(IKernelDevice d, DevicePtr y, long n, float value, DType t = DType.F32) =>
        d.Launch("fill_" + Suffix(t), Grid1D(n), Block256, 0, new KernelArgs().Ptr(y).I64(n).F32(value));

    // ------------------------------------------------------------------ reduce.cu
    /// <summary>y[outer, inner] = reduce over the middle axis of x[outer, len, inner].</summary>
    public static void Reduce(IKernelDevice d, ReduceOp op, DevicePtr x, DevicePtr y, long outer, int len, long inner, DType t = DType.F32)
    {
        var args = new KernelArgs().I32((int)op).Ptr(x).Ptr(y).I64(outer).I32(len).I64(inner);
        if (inner == 1) d.Launch("reduce_rows_" + Suffix(t), new Dim3(checked((uint)outer)), RowBlock(len), 0, args);
        else d.Launch("reduce_strided_" + Suffix(t), Grid1D(outer * inner), Block256, 0, args);
    }

    // ------------------------------------------------------------------ gather.cu
    /// <summary>y [outer, count, inner] = x [outer, len, inner] gathered at idx (I32 or I64); *badIndex (int) is set on an out-of-range index.</summary>
    public static void Gather(IKernelDevice d, DevicePtr x, DevicePtr idx, DType indexType, DevicePtr y, long outer, int len, long inner, long count, DevicePtr badIndex, DType t = DType.F32)
    {
        Suffix(t); // the float instantiations only
        GatherElements(d, x, idx, indexType, y, outer, len, inner, count, badIndex, t.Size());
    }

    /// <summary>dx (fp32, zeroed by the caller) += dy scattered back to the gathered rows.</summary>
    public static void GatherBackward(IKernelDevice d, DevicePtr dy, DevicePtr idx, DType indexType, DevicePtr dx, long outer, int len, long inner, long count, DType t = DType.F32) =>
        d.Launch($"gather_backward_{Suffix(t)}_{IndexSuffix(indexType)}", Grid1D(outer * count * inner), Block256, 0,
            new KernelArgs().Ptr(dy).Ptr(idx).Ptr(dx).I64(outer).I32(len).I64(inner).I64(count));

    private static string IndexSuffix(DType t) => t switch
    {
        DType.I32 => "i32",
        DType.I64 => "i64",
        _ => throw new ArgumentException($"gather indices must be I32 or I64, not {t}"),
    };


}
