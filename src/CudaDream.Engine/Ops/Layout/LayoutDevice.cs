using System.Runtime.InteropServices;
using CudaDream.Engine.Backends;
using CudaDream.Engine.Backends.Cpu;
using CudaDream.Engine.Backends.Device;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Tensors;

namespace CudaDream.Engine.Ops;

/// <summary>
/// Data-movement ops on kernel devices. All of them are the one strided-copy kernel with different
/// strides (Transpose permutes them, Slice scales them, Expand zeroes them ...) or a gather; shape
/// arithmetic that survived folding is computed on the host and uploaded each run.
/// </summary>
internal static class LayoutDevice
{
    public static Dictionary<string, DeviceOpCompiler> Table { get; } = Register();

    private static Dictionary<string, DeviceOpCompiler> Register()
    {
        var t = new Dictionary<string, DeviceOpCompiler>(StringComparer.Ordinal);
        foreach (var op in new[] { "Reshape", "Flatten", "Unsqueeze", "Squeeze" }) t[op] = ElementwiseDevice.CopyInput;
        t["Shape"] = s =>
        {
            var shape = s.InShape(0);
            int rank = shape.Length;
            long start = s.Node.Attributes.Int("start", 0), end = s.Node.Attributes.Int("end", rank);
            start = Math.Clamp(start < 0 ? start + rank : start, 0, rank);
            end = Math.Clamp(end < 0 ? end + rank : end, 0, rank);
            return Upload(s, Tensor.FromArray(shape[(int)start..(int)end].Select(d => (long)d).ToArray(), (int)(end - start)));
        };
        t["Size"] = s => Upload(s, Tensor.FromArray(new[] { s.InCount(0) }));
        t["ConstantOfShape"] = s =>
        {
            var value = (s.Node.Attributes.Tensor("value") ?? Tensor.FromArray(new[] { 0f }, 1)).To(s.OutType());
            var (y, n, bytes) = (s.Out(), s.OutCount(), value.Data[..s.OutType().Size()].ToArray());
            return () => KernelLaunchers.FillPattern(s.Device, y.Ptr, n, bytes);
        };
        t["Range"] = s =>
        {
            double start = s.HostConstant(0).ToFloat64Array()[0], delta = s.HostConstant(2).ToFloat64Array()[0];
            var r = new double[s.OutCount()];
            for (int k = 0; k < r.Length; k++) r[k] = start + k * delta;
            return Upload(s, Tensor.FromArray(r, r.Length).To(s.OutType()));
        };
        t["Concat"] = Concat;
        t["Gather"] = Gather;
        t["Slice"] = s =>
        {
            var (starts, steps, outShape) = LayoutOps.ResolveSlice(s.Node);
            var strides = Shapes.Strides(s.InShape(0));
            long offset = 0;
            for (int d = 0; d < strides.Length; d++) offset += starts[d] * strides[d];
            return Copy(s, s.In(0), offset, strides.Select((st, d) => st * steps[d]).ToArray(), s.Out(), 0, Shapes.Strides(outShape), outShape);
        };
        t["Split"] = Split;
        t["Transpose"] = s =>
        {
            var perm = LayoutOps.Perm(s.Node, s.InShape(0).Length);
            var strides = Shapes.Strides(s.InShape(0));
            return Copy(s, s.In(0), 0, perm.Select(p => strides[p]).ToArray(), s.Out(), 0, Shapes.Strides(s.OutShape()), s.OutShape());
        };
        t["Expand"] = s => Copy(s, s.In(0), 0, KernelLaunchers.BroadcastStrides(s.InShape(0), s.OutShape()), s.Out(), 0, Shapes.Strides(s.OutShape()), s.OutShape());
        t["Tile"] = Tile;
        return t;
    }

    /// <summary>Writes host-computed bytes to the output at every run (the arena slot is shared with other values).</summary>
    private static Action Upload(DeviceStepBuilder s, Tensor value)
    {
        var (y, bytes) = (s.Out(), value.Data.ToArray());
        return () => s.Device.CopyToDevice(y.Ptr, bytes);
    }

    /// <summary>One strided copy between addresses, offsets and strides in elements of the output's type.</summary>
    internal static Action Copy(DeviceStepBuilder s, DeviceAddress src, long srcOffset, long[] srcStrides, DeviceAddress dst, long dstOffset, long[] dstStrides, int[] shape)
    {
        int width = s.OutType().Size();
        var (from, to) = (src.At(srcOffset * width), dst.At(dstOffset * width));
        return () => LayoutKernels.StridedCopy(s.Device, from.Ptr, srcStrides, to.Ptr, dstStrides, shape, width);
    }

    private static Action Concat(DeviceStepBuilder s)
    {
        var outShape = s.OutShape();
        int axis = Shapes.Axis(s.Node.Attributes.Int("axis"), outShape.Length);
        var outStrides = Shapes.Strides(outShape);
        var copies = new List<Action>();
        long offset = 0;
        for (int i = 0; i < s.Node.Inputs.Count; i++)
        {
            var shape = s.InShape(i);
            copies.Add(Copy(s, s.In(i), 0, Shapes.Strides(shape), s.Out(), offset * outStrides[axis], outStrides, shape));
            offset += shape[axis];
        }
        return () => { foreach (var c in copies) c(); };
    }

    private static Action Split(DeviceStepBuilder s)
    {
        var (axis, sizes) = LayoutOps.ResolveSplit(s.Node);
        var inStrides = Shapes.Strides(s.InShape(0));
        var copies = new List<Action>();
        long offset = 0;
        for (int k = 0; k < sizes.Length; k++)
        {
            var shape = s.OutShape(k);
            copies.Add(Copy(s, s.In(0), offset * inStrides[axis], inStrides, s.Out(k), 0, Shapes.Strides(shape), shape));
            offset += sizes[k];
        }
        return () => { foreach (var c in copies) c(); };
    }

    /// <summary>Tile as a copy over [repeat₀, d₀, repeat₁, d₁, …]: the input is read with stride 0 along each repeat axis.</summary>
    private static Action Tile(DeviceStepBuilder s)
    {
        var inShape = s.InShape(0);
        var outShape = s.OutShape();
        var inStrides = Shapes.Strides(inShape);
        var outStrides = Shapes.Strides(outShape);
        int r = inShape.Length;
        var shape = new int[2 * r];
        var src = new long[2 * r];
        var dst = new long[2 * r];
        for (int d = 0; d < r; d++)
        {
            shape[2 * d] = inShape[d] == 0 ? 0 : outShape[d] / inShape[d];
            shape[2 * d + 1] = inShape[d];
            src[2 * d] = 0;
            src[2 * d + 1] = inStrides[d];
            dst[2 * d] = inShape[d] * outStrides[d];
            dst[2 * d + 1] = outStrides[d];
        }
        return Copy(s, s.In(0), 0, src, s.Out(), 0, dst, shape);
    }

    /// <summary>ONNX Gather along one axis with runtime or constant indices; an out-of-range index fails the run, naming the node.</summary>
    private static Action Gather(DeviceStepBuilder s)
    {
        var data = s.InShape(0);
        int axis = Shapes.Axis(s.Node.Attributes.Int("axis", 0), data.Length);
        long outer = 1;
        for (int d = 0; d < axis; d++) outer *= data[d];
        int len = data[axis];
        long inner = Shapes.Numel(data.AsSpan(axis + 1));
        var indexType = s.InType(1);
        if (indexType is not (DType.I32 or DType.I64)) throw new NotSupportedException($"Gather indices of type {indexType}");
        var (x, idx, y, count, width) = (s.In(0), s.In(1), s.Out(), s.InCount(1), s.OutType().Size());
        var flag = s.ErrorFlag($"an index is out of range for dimension {len}");
        return () => LayoutKernels.GatherElements(s.Device, x.Ptr, idx.Ptr, indexType, y.Ptr, outer, len, inner, count, flag.Ptr, width);
    }
}
