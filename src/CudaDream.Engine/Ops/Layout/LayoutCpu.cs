using CudaDream.Engine.Backends;
using CudaDream.Engine.Backends.Cpu;
using CudaDream.Engine.Backends.Device;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Tensors;

namespace CudaDream.Engine.Ops;

/// <summary>Data-movement ops. They work on bytes (any element type).</summary>
internal static class LayoutCpu
{
    public static Dictionary<string, CpuOpImpl> Table { get; } = Register();

    private static Dictionary<string, CpuOpImpl> Register()
    {
        var t = new Dictionary<string, CpuOpImpl>(StringComparer.Ordinal);
        t["Shape"] = (n, i, o, c) =>
        {
            var s = i[0]!.Shape;
            int rank = s.Length;
            long start = n.Attributes.Int("start", 0), end = n.Attributes.Int("end", rank);
            start = Math.Clamp(start < 0 ? start + rank : start, 0, rank);
            end = Math.Clamp(end < 0 ? end + rank : end, 0, rank);
            var d = o[0].Span<long>();
            for (long k = start; k < end; k++) d[(int)(k - start)] = s[k];
        };
        t["Size"] = (n, i, o, c) => o[0].Span<long>()[0] = i[0]!.Numel;
        foreach (var op in new[] { "Reshape", "Flatten", "Unsqueeze", "Squeeze" }) t[op] = ElementwiseCpu.Copy;
        t["Concat"] = Concat;
        t["Gather"] = Gather;
        t["Slice"] = Slice;
        t["Split"] = Split;
        t["Transpose"] = (n, i, o, c) => Transpose(i[0]!, o[0], LayoutOps.Perm(n, i[0]!.Rank));
        t["Expand"] = (n, i, o, c) => BroadcastKernels.Expand(i[0]!, o[0]);
        t["Tile"] = Tile;
        t["ConstantOfShape"] = (n, i, o, c) =>
        {
            var v = n.Attributes.Tensor("value") ?? Tensor.FromArray(new[] { 0f }, 1);
            var bytes = v.Data.Span[..v.DType.Size()];
            var d = o[0].Data.Span;
            for (int k = 0; k < d.Length; k += bytes.Length) bytes.CopyTo(d[k..]);
        };
        t["Range"] = (n, i, o, c) =>
        {
            double start = i[0]!.ToFloat64Array()[0], delta = i[2]!.ToFloat64Array()[0];
            var r = new double[o[0].Numel];
            for (int k = 0; k < r.Length; k++) r[k] = start + k * delta;
            Tensor.FromArray(r, r.Length).To(o[0].DType).Data.Span.CopyTo(o[0].Data.Span);
        };
        return t;
    }

    private static void Concat(Node n, Tensor?[] i, Tensor[] o, CpuContext c)
    {
        var y = o[0];
        int axis = Shapes.Axis(n.Attributes.Int("axis"), y.Rank);
        int es = y.DType.Size();
        long outer = 1;
        for (int d = 0; d < axis; d++) outer *= y.Shape[d];
        long innerOut = Shapes.Numel(y.Shape.AsSpan(axis)) * es;
        long offset = 0;
        var dst = y.Data.Span;
        foreach (var x in i)
        {
            long block = Shapes.Numel(x!.Shape.AsSpan(axis)) * es;
            var src = x.Data.Span;
            for (long r = 0; r < outer; r++)
                src.Slice((int)(r * block), (int)block).CopyTo(dst.Slice((int)(r * innerOut + offset), (int)block));
            offset += block;
        }
    }

    private static void Gather(Node n, Tensor?[] i, Tensor[] o, CpuContext c)
    {
        var data = i[0]!; var idx = i[1]!.ToInt64Array();
        int axis = Shapes.Axis(n.Attributes.Int("axis", 0), data.Rank);
        int es = data.DType.Size();
        long outer = 1;
        for (int d = 0; d < axis; d++) outer *= data.Shape[d];
        int dim = data.Shape[axis];
        long inner = Shapes.Numel(data.Shape.AsSpan(axis + 1)) * es;
        var src = data.Data.Span; var dst = o[0].Data.Span;
        long w = 0;
        for (long r = 0; r < outer; r++)
            foreach (var raw in idx)
            {
                long k = raw < 0 ? raw + dim : raw;
                if (k < 0 || k >= dim) throw new GraphException(n, $"index {raw} is out of range for dimension {dim}");
                src.Slice((int)((r * dim + k) * inner), (int)inner).CopyTo(dst.Slice((int)w, (int)inner));
                w += inner;
            }
    }

    private static void Slice(Node n, Tensor?[] i, Tensor[] o, CpuContext c)
    {
        var (starts, steps, outShape) = LayoutOps.ResolveSlice(n);
        StridedCopy(i[0]!, o[0], starts, steps, outShape);
    }

    private static void Split(Node n, Tensor?[] i, Tensor[] o, CpuContext c)
    {
        var (axis, sizes) = LayoutOps.ResolveSplit(n);
        var x = i[0]!;
        int offset = 0;
        for (int k = 0; k < o.Length; k++)
        {
            var starts = new int[x.Rank];
            starts[axis] = offset;
            StridedCopy(x, o[k], starts, Enumerable.Repeat(1, x.Rank).ToArray(), o[k].Shape);
            offset += sizes[k];
        }
    }

    /// <summary>y[idx] = x[starts + idx·steps] over y's shape.</summary>
    public static void StridedCopy(Tensor x, Tensor y, int[] starts, int[] steps, int[] outShape)
    {
        int es = x.DType.Size();
        var inStrides = Shapes.Strides(x.Shape);
        int r = x.Rank;
        long total = Shapes.Numel(outShape);
        if (total == 0) return;
        var src = x.Data.Span; var dst = y.Data.Span;
        var idx = new int[r];
        long baseOff = 0;
        for (int d = 0; d < r; d++) baseOff += starts[d] * inStrides[d];
        int inner = outShape[r - 1];
        long innerStep = steps[r - 1] * inStrides[r - 1];
        long rows = total / inner;
        for (long row = 0; row < rows; row++)
        {
            long rem = row, off = baseOff;
            for (int d = r - 2; d >= 0; d--)
            {
                long k = rem % outShape[d];
                rem /= outShape[d];
                off += k * steps[d] * inStrides[d];
            }
            long w = row * inner;
            if (innerStep == 1)
                src.Slice((int)(off * es), inner * es).CopyTo(dst.Slice((int)(w * es), inner * es));
            else
                for (int k = 0; k < inner; k++)
                    src.Slice((int)((off + k * innerStep) * es), es).CopyTo(dst.Slice((int)((w + k) * es), es));
        }
    }

    /// <summary>y = x permuted: y dimension d is x dimension perm[d].</summary>
    public static void Transpose(Tensor x, Tensor y, int[] perm)
    {
        int r = x.Rank;
        var inStrides = Shapes.Strides(x.Shape);
        var permStrides = perm.Select(p => (int)inStrides[p]).ToArray();
        // A permutation is a strided read: output dimension d steps through the input by inStrides[perm[d]].
        if (x.DType.Size() == 4)
        {
            var src = x.ReadOnlySpan<int>(); var dst = y.Span<int>();
            TransposeTyped(src, dst, y.Shape, permStrides);
        }
        else
        {
            int es = x.DType.Size();
            var src = x.Data.Span; var dst = y.Data.Span;
            long total = y.Numel;
            for (long w = 0; w < total; w++)
            {
                long rem = w, off = 0;
                for (int d = r - 1; d >= 0; d--) { long k = rem % y.Shape[d]; rem /= y.Shape[d]; off += k * permStrides[d]; }
                src.Slice((int)(off * es), es).CopyTo(dst.Slice((int)(w * es), es));
            }
        }
    }

    private static void TransposeTyped(ReadOnlySpan<int> src, Span<int> dst, int[] outShape, int[] strides)
    {
        int r = outShape.Length;
        int inner = outShape[r - 1];
        int innerStride = strides[r - 1];
        long rows = Shapes.Numel(outShape) / Math.Max(inner, 1);
        var idx = new int[r];
        long off = 0;
        for (long row = 0; row < rows; row++)
        {
            int w = (int)(row * inner);
            for (int k = 0; k < inner; k++) dst[w + k] = src[(int)(off + (long)k * innerStride)];
            // Odometer over the outer dimensions.
            for (int d = r - 2; d >= 0; d--)
            {
                idx[d]++;
                off += strides[d];
                if (idx[d] < outShape[d]) break;
                off -= (long)strides[d] * outShape[d];
                idx[d] = 0;
            }
        }
    }

    private static void Tile(Node n, Tensor?[] i, Tensor[] o, CpuContext c)
    {
        var x = i[0]!; var y = o[0];
        int r = x.Rank, es = x.DType.Size();
        var src = x.Data.Span; var dst = y.Data.Span;
        var xs = Shapes.Strides(x.Shape);
        long total = y.Numel;
        for (long w = 0; w < total; w++)
        {
            long rem = w, off = 0;
            for (int d = r - 1; d >= 0; d--) { long k = rem % y.Shape[d]; rem /= y.Shape[d]; off += (k % x.Shape[d]) * xs[d]; }
            src.Slice((int)(off * es), es).CopyTo(dst.Slice((int)(w * es), es));
        }
    }
}
