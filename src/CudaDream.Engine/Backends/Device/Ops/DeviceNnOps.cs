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
        t["Resize"] = Resize;
        t["Pad"] = Pad;
        t["RandomNormalLike"] = RandomNormal;
        t["RandomNormal"] = RandomNormal;
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

    /// <summary>(N·C, H, W, factor y, factor x) of a nearest resize by whole factors of NCHW tensors.</summary>
    internal static (long Planes, int H, int W, int Fy, int Fx) NearestFactors(Node node, int[] input, int[] output)
    {
        if (input.Length != 4 || input[0] != output[0] || input[1] != output[1])
            throw new GraphException(node, "nearest resize is supported on the last two dimensions of NCHW tensors only");
        if (input[2] == 0 || input[3] == 0 || output[2] % input[2] != 0 || output[3] % input[3] != 0)
            throw new NotSupportedException($"nearest resize from {Shapes.Format(input)} to {Shapes.Format(output)} by a non-integer factor");
        return ((long)input[0] * input[1], input[2], input[3], output[2] / input[2], output[3] / input[3]);
    }

    private static Action Resize(DeviceStepBuilder s)
    {
        var a = s.Node.Attributes;
        var (mode, ctm, nearest) = (a.String("mode", "nearest"), a.String("coordinate_transformation_mode", "half_pixel"), a.String("nearest_mode", "round_prefer_floor"));
        if (mode != "nearest" || ctm != "asymmetric" || nearest != "floor")
            throw new GraphException(s.Node, $"Resize mode={mode}, coordinate_transformation_mode={ctm}, nearest_mode={nearest} is not supported (nearest/asymmetric/floor is)");
        s.RequireF32();
        var (planes, h, w, fy, fx) = NearestFactors(s.Node, s.InShape(0), s.OutShape());
        var (x, y) = (s.In(0), s.Out());
        return () => KernelLaunchers.ResizeNearest(s.Device, x.Ptr, y.Ptr, planes, h, w, fy, fx);
    }

    /// <summary>Constant Pad over any dimensions: fill the output with the pad value, then copy the input into its interior.</summary>
    private static Action Pad(DeviceStepBuilder s)
    {
        var mode = s.Node.Attributes.String("mode", "constant");
        if (mode != "constant") throw new GraphException(s.Node, $"Pad mode '{mode}' is not supported");
        var pads = OpSchemas.ResolvePads(s.Node);
        if (pads.Any(p => p < 0)) throw new GraphException(s.Node, "negative pads (cropping) are not supported");
        var type = s.OutType();
        var value = (s.HasInput(2) && s.InCount(2) > 0 ? s.HostConstant(2).To(type) : Tensor.Zeros(type, 1)).Data[..type.Size()].ToArray();
        var outShape = s.OutShape();
        var outStrides = Shapes.Strides(outShape);
        long interior = 0;
        for (int d = 0; d < outShape.Length; d++) interior += pads[d] * outStrides[d];
        var (y, n) = (s.Out(), s.OutCount());
        var copy = DeviceShapeOps.Copy(s, s.In(0), 0, Shapes.Strides(s.InShape(0)), y, interior, outStrides, s.InShape(0));
        return () =>
        {
            KernelLaunchers.FillPattern(s.Device, y.Ptr, n, value);
            copy();
        };
    }

    /// <summary>RandomNormal(Like) from the counter-based generator keyed by (run seed ⊕ node seed, step), as the CPU backend draws it.</summary>
    private static Action RandomNormal(DeviceStepBuilder s)
    {
        if (s.OutType() != DType.F32) throw new NotSupportedException($"RandomNormal into {s.OutType()}");
        var a = s.Node.Attributes;
        float mean = a.Float("mean", 0f), scale = a.Float("scale", 1f);
        ulong seedXor = a.Has("seed") ? (ulong)BitConverter.SingleToUInt32Bits(a.Float("seed", 0)) << 32 : 0;
        var (y, n, key) = (s.Out(), s.OutCount(), s.RandomKey);
        return () => KernelLaunchers.RandomNormal(s.Device, y.Ptr, n, key.Ptr, seedXor, RandomPurpose.LatentSample, mean, scale);
    }
}
