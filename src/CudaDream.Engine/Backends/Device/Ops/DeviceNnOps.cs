using CudaDream.Engine.Backends.Cpu.Ops;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Graph.Ops;
using CudaDream.Engine.Randomness;
using CudaDream.Engine.Tensors;

namespace CudaDream.Engine.Backends.Device.Ops;

/// <summary>ONNX neural-network ops on kernel devices: MatMul, Gemm, Conv, normalisations, Resize, Pad, random draws.</summary>
internal static class DeviceNnOps
{
    public static void Register(Dictionary<string, DeviceOpCompiler> t)
    {
        t["MatMul"] = MatMul;
        t["Gemm"] = Gemm;
        t["Conv"] = Conv;
    }

    /// <summary>numpy.matmul: one strided-batched GEMM when every batch sits a fixed stride from the last, else one GEMM per batch.</summary>
    private static Action MatMul(DeviceStepBuilder s)
    {
        s.RequireF32();
        var (a, b) = (s.InShape(0), s.InShape(1));
        var (_, m, k, n, batch) = OpSchemas.MatMulDims(s.Node, a, b);
        var (pa, pb, py) = (s.In(0), s.In(1), s.Out());
        long batches = Shapes.Numel(batch);
        var bBatch = b.Length > 2 ? b[..^2] : Array.Empty<int>();
        if (bBatch.Length == 0)
        {
            // A weight shared by every batch: the batch folds into M.
            int rows = checked((int)(batches * m));
            return () => KernelLaunchers.MatMul(s.Device, false, false, rows, n, k, pa.Ptr, pb.Ptr, py.Ptr);
        }
        var aBatch = a.Length > 2 ? a[..^2] : Array.Empty<int>();
        var offA = BatchOffsets(aBatch, batch, (long)m * k);
        var offB = BatchOffsets(bBatch, batch, (long)k * n);
        long yMat = (long)m * n;
        if (IsArithmetic(offA) && IsArithmetic(offB))
        {
            long strideA = batches > 1 ? offA[1] : 0, strideB = batches > 1 ? offB[1] : 0;
            int count = checked((int)batches);
            return () => KernelLaunchers.MatMul(s.Device, false, false, m, n, k, pa.Ptr, pb.Ptr, py.Ptr, batch: count, strideA: strideA, strideB: strideB, strideC: yMat);
        }
        return () =>
        {
            for (int i = 0; i < batches; i++)
                KernelLaunchers.MatMul(s.Device, false, false, m, n, k, pa.Ptr + offA[i] * 4, pb.Ptr + offB[i] * 4, py.Ptr + i * yMat * 4);
        };
    }

    /// <summary>Element offset of each output batch's matrix in an operand with batch shape <paramref name="own"/>.</summary>
    private static long[] BatchOffsets(int[] own, int[] batch, long matrix)
    {
        var strides = KernelLaunchers.BroadcastStrides(own, batch);
        var result = new long[Shapes.Numel(batch)];
        for (long i = 0; i < result.Length; i++)
        {
            long rest = i, off = 0;
            for (int d = batch.Length - 1; d >= 0; d--) { off += rest % batch[d] * strides[d]; rest /= batch[d]; }
            result[i] = off * matrix;
        }
        return result;
    }

    private static bool IsArithmetic(long[] offsets)
    {
        for (int i = 2; i < offsets.Length; i++)
            if (offsets[i] - offsets[i - 1] != offsets[1] - offsets[0]) return false;
        return offsets.Length == 0 || offsets[0] == 0;
    }

    /// <summary>ONNX Gemm: Y = alpha·op(A)·op(B) + beta·C, C broadcast into Y first.</summary>
    private static Action Gemm(DeviceStepBuilder s)
    {
        s.RequireF32();
        var (aShape, bShape, yShape) = (s.InShape(0), s.InShape(1), s.OutShape());
        bool ta = s.Node.Attributes.Int("transA", 0) != 0, tb = s.Node.Attributes.Int("transB", 0) != 0;
        float alpha = s.Node.Attributes.Float("alpha", 1f), beta = s.Node.Attributes.Float("beta", 1f);
        int m = yShape[0], n = yShape[1], k = ta ? aShape[0] : aShape[1];
        var (pa, pb, py) = (s.In(0), s.In(1), s.Out());
        Action? bias = s.HasInput(2)
            ? DeviceShapeOps.Copy(s, s.In(2), 0, KernelLaunchers.BroadcastStrides(s.InShape(2), yShape), py, 0, Shapes.Strides(yShape), yShape)
            : null;
        return () =>
        {
            bias?.Invoke();
            KernelLaunchers.MatMul(s.Device, ta, tb, m, n, k, pa.Ptr, pb.Ptr, py.Ptr, alpha, bias != null ? beta : 0);
        };
    }

    private static Action Conv(DeviceStepBuilder s)
    {
        s.RequireF32();
        var g = NnOps.Geometry(OpSchemas.ResolveConv(s.Node));
        var col = s.Scratch(Math.Max(1, KernelLaunchers.Conv2dWorkspaceElements(g)) * 4);
        var (x, w, bias, y) = (s.In(0), s.In(1), s.In(2), s.Out());
        return () => KernelLaunchers.Conv2dForward(s.Device, g, x.Ptr, w.Ptr, bias.Ptr, y.Ptr, col.Ptr);
    }


}
