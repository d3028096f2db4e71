using System.Runtime.InteropServices;
using CudaDream.Engine.Backends;
using CudaDream.Engine.Tensors;
using static CudaDream.Engine.Backends.KernelLaunchers;

namespace CudaDream.Engine.Ops;

/// <summary>layout.cu CopyGeometry: iteration shape and source/destination element strides.</summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct CopyGeometry
{
    public const int MaxRank = 8;
    public int Rank;
    public fixed int Shape[MaxRank];
    public fixed long SourceStride[MaxRank];
    public fixed long DestinationStride[MaxRank];
}

/// <summary>Launchers of kernels/layout.cu and kernels/gather.cu: the one strided copy every data-movement op is, and gathers.</summary>
public static class LayoutKernels
{
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

    /// <summary>y [outer, count, inner] = x [outer, len, inner] gathered at idx (I32 or I64); *badIndex (int) is set on an out-of-range index.</summary>
    public static void Gather(IKernelDevice d, DevicePtr x, DevicePtr idx, DType indexType, DevicePtr y, long outer, int len, long inner, long count, DevicePtr badIndex, DType t = DType.F32)
    {
        KernelName("gather_forward", t); // the float instantiations only
        GatherElements(d, x, idx, indexType, y, outer, len, inner, count, badIndex, t.Size());
    }

    /// <summary>dx (fp32, zeroed by the caller) += dy scattered back to the gathered rows.</summary>
    public static void GatherBackward(IKernelDevice d, DevicePtr dy, DevicePtr idx, DType indexType, DevicePtr dx, long outer, int len, long inner, long count, DType t = DType.F32) =>
        d.Launch($"{KernelName("gather_backward", t)}_{IndexSuffix(indexType)}", Grid1D(outer * count * inner), Block256, 0,
            new KernelArgs().Ptr(dy).Ptr(idx).Ptr(dx).I64(outer).I32(len).I64(inner).I64(count));

    private static string IndexSuffix(DType t) => t switch
    {
        DType.I32 => "i32",
        DType.I64 => "i64",
        _ => throw new ArgumentException($"gather indices must be I32 or I64, not {t}"),
    };
}
