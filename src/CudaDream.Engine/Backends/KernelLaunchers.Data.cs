using CudaDream.Engine.Tensors;

namespace CudaDream.Engine.Backends;

public static partial class KernelLaunchers
{
    // ------------------------------------------------------------------ layout.cu
    /// <summary>
    /// dst[Σ idx·dstStride] = src[Σ idx·srcStride] for every index of <paramref name="shape"/> (element
    /// strides, 0 to broadcast). Dimensions of size 1 are dropped and neighbours that are contiguous in
    /// both operands merged, so a plain copy is one dimension.
    /// </summary>
    public static unsafe void StridedCopy(IKernelDevice d, DevicePtr src, long[] srcStride, DevicePtr dst, long[] dstStride, int[] shape, int elementBytes)
    {
        var (dims, ss, ds) = MergeDimensions(shape, srcStride, dstStride);
        if (dims.Count > CopyGeometry.MaxRank) throw new NotSupportedException($"a strided copy of rank {dims.Count} > {CopyGeometry.MaxRank}");
        var g = new CopyGeometry { Rank = dims.Count };
        for (int i = 0; i < dims.Count; i++) { g.Shape[i] = dims[i]; g.SourceStride[i] = ss[i]; g.DestinationStride[i] = ds[i]; }
        long n = Shapes.Numel(shape);
        if (n == 0) return;
        d.Launch("strided_copy_" + WidthSuffix(elementBytes), Grid1D(n), Block256, 0, new KernelArgs().Ptr(src).Ptr(dst).Value(g).I64(n));
    }

    private static (List<int> Dims, List<long> Src, List<long> Dst) MergeDimensions(int[] shape, long[] srcStride, long[] dstStride)
    {
        var dims = new List<int>();
        var src = new List<long>();
        var dst = new List<long>();
        for (int i = 0; i < shape.Length; i++)
        {
            if (shape[i] == 1) continue;
            int last = dims.Count - 1;
            if (last >= 0 && src[last] == srcStride[i] * shape[i] && dst[last] == dstStride[i] * shape[i])
            {
                dims[last] *= shape[i];
                src[last] = srcStride[i];
                dst[last] = dstStride[i];
                continue;
            }
            dims.Add(shape[i]);
            src.Add(srcStride[i]);
            dst.Add(dstStride[i]);
        }
        if (dims.Count == 0) { dims.Add(1); src.Add(0); dst.Add(0); }
        return (dims, src, dst);
    }

    /// <summary>dst[0..n) = the element whose bytes are <paramref name="value"/> (1, 2, 4 or 8 of them).</summary>
    public static void FillPattern(IKernelDevice d, DevicePtr dst, long n, ReadOnlySpan<byte> value)
    {
        if (n == 0) return;
        var args = new KernelArgs().Ptr(dst).I64(n);
        switch (value.Length)
        {
            case 1: args.Value(value[0]); break;
            case 2: args.Value(BitConverter.ToUInt16(value)); break;
            case 4: args.Value(BitConverter.ToUInt32(value)); break;
            case 8: args.Value(BitConverter.ToUInt64(value)); break;
            default: throw new ArgumentException($"no fill for {value.Length}-byte elements");
        }
        d.Launch("fill_pattern_" + WidthSuffix(value.Length), Grid1D(n), Block256, 0, args);
    }

    private static string WidthSuffix(int bytes) => bytes is 1 or 2 or 4 or 8 ? bytes.ToString() : throw new NotSupportedException($"{bytes}-byte elements");

    /// <summary>
    /// <see cref="Gather"/> for any element width (a bit copy): f32 for 4 bytes, u8/u16/u64 otherwise.
    /// </summary>
    public static void GatherElements(IKernelDevice d, DevicePtr x, DevicePtr idx, DType indexType, DevicePtr y, long outer, int len, long inner, long count,
        DevicePtr badIndex, int elementBytes)
    {
        var type = elementBytes switch { 1 => "u8", 2 => "u16", 4 => "f32", 8 => "u64", _ => throw new NotSupportedException($"gather of {elementBytes}-byte elements") };
        d.Launch($"gather_forward_{type}_{IndexSuffix(indexType)}", Grid1D(outer * count * inner), Block256, 0,
            new KernelArgs().Ptr(x).Ptr(idx).Ptr(y).I64(outer).I32(len).I64(inner).I64(count).Ptr(badIndex));
    }

    // ------------------------------------------------------------------ elementwise.cu: integers, bools, comparisons, casts
    private static string IntegerSuffix(DType t) => t switch
    {
        DType.I32 => "i32",
        DType.I64 => "i64",
        DType.U8 or DType.Bool => "u8",
        _ => throw new NotSupportedException($"integer kernels for {t} are not instantiated"),
    };

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
        var suffix = t == DType.F32 ? "f32" : IntegerSuffix(t);
        d.Launch("compare_" + suffix, Grid1D(n), Block256, 0, new KernelArgs().I32((int)op).Ptr(a).Ptr(b).Ptr(y).Value(s).I64(n));
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
