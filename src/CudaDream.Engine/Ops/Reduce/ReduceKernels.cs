using System.Runtime.InteropServices;
using CudaDream.Engine.Backends;
using CudaDream.Engine.Tensors;
using static CudaDream.Engine.Backends.KernelLaunchers;

namespace CudaDream.Engine.Ops;

public enum ReduceOp { Sum = 0, Mean = 1, Max = 2, SumOfSquares = 3, Min = 4 }

/// <summary>reduce.cu ReduceGeometry: where each output and each reduced element sits in the input.</summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct ReduceGeometry
{
    public int OutRank, ReducedRank;
    public fixed int OutShape[BroadcastShape.MaxRank];
    public fixed int ReducedShape[BroadcastShape.MaxRank];
    public fixed long OutStride[BroadcastShape.MaxRank];
    public fixed long ReducedStride[BroadcastShape.MaxRank];
    public long Count;
}

/// <summary>Launchers of kernels/reduce.cu: reductions over any axes, and arg-reductions.</summary>
public static class ReduceKernels
{
    /// <summary>y[outer, inner] = reduce over the middle axis of x[outer, len, inner].</summary>
    public static void Reduce(IKernelDevice d, ReduceOp op, DevicePtr x, DevicePtr y, long outer, int len, long inner, DType t = DType.F32)
    {
        var args = new KernelArgs().I32((int)op).Ptr(x).Ptr(y).I64(outer).I32(len).I64(inner);
        if (inner == 1) d.Launch(KernelName("reduce_rows", t), new Dim3(checked((uint)outer)), RowBlock(len), 0, args);
        else d.Launch(KernelName("reduce_strided", t), Grid1D(outer * inner), Block256, 0, args);
    }

    /// <summary>Reduced elements per output from which one block per output beats one thread per output.</summary>
    private const long BlockReduceThreshold = 1024;

    /// <summary>
    /// y = reduce of x [<paramref name="shape"/>] over <paramref name="axes"/> (any set, sorted), y holding the
    /// kept dimensions in order. Contiguous axes go to the [outer, len, inner] kernels; scattered ones
    /// (and SumTo's broadcast axes) to the geometry kernels.
    /// </summary>
    public static unsafe void ReduceAxes(IKernelDevice d, ReduceOp op, DevicePtr x, int[] shape, int[] axes, DevicePtr y, DType t = DType.F32)
    {
        var reduced = new bool[shape.Length];
        foreach (var a in axes) reduced[a] = true;
        // Drop size-1 dimensions: they change nothing and would split a contiguous run.
        var live = Enumerable.Range(0, shape.Length).Where(i => shape[i] != 1).ToArray();
        var liveReduced = live.Where(i => reduced[i]).ToArray();
        if (liveReduced.Length == 0 || live.Length == 0)
        {
            // Nothing is summed: the output is the input (a mean over size-1 axes included).
            Reduce(d, op, x, y, Shapes.Numel(shape), 1, 1, t);
            return;
        }
        int first = Array.IndexOf(live, liveReduced[0]), last = Array.IndexOf(live, liveReduced[^1]);
        if (last - first + 1 == liveReduced.Length)
        {
            long outer = 1, len = 1, inner = 1;
            for (int k = 0; k < live.Length; k++)
            {
                long dim = shape[live[k]];
                if (k < first) outer *= dim; else if (k <= last) len *= dim; else inner *= dim;
            }
            Reduce(d, op, x, y, outer, checked((int)len), inner, t);
            return;
        }
        var strides = Shapes.Strides(shape);
        var kept = live.Where(i => !reduced[i]).ToArray();
        if (kept.Length > BroadcastShape.MaxRank || liveReduced.Length > BroadcastShape.MaxRank)
            throw new NotSupportedException($"a reduction over {liveReduced.Length} of {live.Length} dimensions");
        var g = new ReduceGeometry { OutRank = kept.Length, ReducedRank = liveReduced.Length, Count = 1 };
        for (int k = 0; k < kept.Length; k++) { g.OutShape[k] = shape[kept[k]]; g.OutStride[k] = strides[kept[k]]; }
        for (int k = 0; k < liveReduced.Length; k++) { g.ReducedShape[k] = shape[liveReduced[k]]; g.ReducedStride[k] = strides[liveReduced[k]]; g.Count *= shape[liveReduced[k]]; }
        long outputs = 1;
        foreach (var k in kept) outputs *= shape[k];
        var args = new KernelArgs().I32((int)op).Ptr(x).Ptr(y).Value(g).I64(outputs);
        if (g.Count >= BlockReduceThreshold && outputs <= int.MaxValue)
            d.Launch(KernelName("reduce_axes_block", t), new Dim3((uint)outputs), Block256, 0, args);
        else
            d.Launch(KernelName("reduce_axes_serial", t), Grid1D(outputs), Block256, 0, args);
    }

    /// <summary>y (I64) [outer, inner] = index along len of the largest (or smallest) element; ties: first, or last when asked.</summary>
    public static void ArgReduce(IKernelDevice d, bool max, bool selectLast, DevicePtr x, DType t, DevicePtr y, long outer, int len, long inner)
    {
        var suffix = t == DType.F32 ? "f32" : IntegerSuffix(t);
        d.Launch("arg_reduce_" + suffix, Grid1D(outer * inner), Block256, 0,
            new KernelArgs().I32(max ? 1 : 0).I32(selectLast ? 1 : 0).Ptr(x).Ptr(y).I64(outer).I32(len).I64(inner));
    }
}
