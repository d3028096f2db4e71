using System.Buffers;
using System.Numerics;
using CudaDream.Engine.Backends.Cpu;
using CudaDream.Engine.Backends.Cpu.Kernels;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Graph.Ops;
using CudaDream.Engine.Randomness;
using CudaDream.Engine.Tensors;

namespace CudaDream.Engine.Backends.Cpu.Ops;

/// <summary>ONNX neural-network ops on the CPU: MatMul, Gemm, Conv, normalisations, Resize, Pad, random draws.</summary>
internal static class NnOps
{
    public static void Register(Dictionary<string, CpuOpImpl> t)
    {
        t["MatMul"] = (n, i, o, c) => Dispatch.Float(n, i[0]!.DType, new MatMulAction(n, i[0]!, i[1]!, o[0], c));
        t["Gemm"] = (n, i, o, c) => Dispatch.Float(n, i[0]!.DType, new GemmAction(n, i, o[0], c));
        t["Conv"] = (n, i, o, c) => Dispatch.Float(n, i[0]!.DType, new ConvAction(n, i, o[0], c));
    }

    /// <summary>numpy.matmul with batch broadcasting, as GEMMs over the broadcast batch.</summary>
    private readonly record struct MatMulAction(Node N, Tensor A, Tensor B, Tensor Y, CpuContext C) : IFloatAction
    {
        public void Run<T>() where T : unmanaged, IFloatingPointIeee754<T>
        {
            var (_, m, k, n, batch) = OpSchemas.MatMulDims(N, A.Shape, B.Shape);
            var a = A.ReadOnlySpan<T>(); var b = B.ReadOnlySpan<T>(); var y = Y.Span<T>();
            var aBatch = A.Rank > 2 ? A.Shape[..^2] : Array.Empty<int>();
            var bBatch = B.Rank > 2 ? B.Shape[..^2] : Array.Empty<int>();
            long batches = Shapes.Numel(batch);
            if (bBatch.Length == 0)
            {
                // A weight shared by every batch: one GEMM with the batch folded into M.
                CpuKernels.Gemm(C, false, false, checked((int)(batches * m)), n, k, T.One, a, k, b, n, T.Zero, y, n);
                return;
            }
            var plan = new BroadcastPlan(batch.Length == 0 ? new[] { 1 } : batch, aBatch.Length == 0 ? new[] { 1 } : aBatch, bBatch.Length == 0 ? new[] { 1 } : bBatch);
            long aMat = (long)m * k, bMat = (long)k * n, yMat = (long)m * n;
            for (long bi = 0; bi < batches; bi++)
            {
                long row = bi / plan.Inner, col = bi % plan.Inner;
                long aOff = (plan.Offset(0, row) + col * plan.InnerStride[0]) * aMat;
                long bOff = (plan.Offset(1, row) + col * plan.InnerStride[1]) * bMat;
                CpuKernels.Gemm(C, false, false, m, n, k, T.One, a.Slice((int)aOff, (int)aMat), k, b.Slice((int)bOff, (int)bMat), n, T.Zero, y.Slice((int)(bi * yMat), (int)yMat), n);
            }
        }
    }

    private readonly record struct GemmAction(Node N, Tensor?[] I, Tensor Y, CpuContext C) : IFloatAction
    {
        public void Run<T>() where T : unmanaged, IFloatingPointIeee754<T>
        {
            var A = I[0]!; var B = I[1]!;
            bool ta = N.Attributes.Int("transA", 0) != 0, tb = N.Attributes.Int("transB", 0) != 0;
            T alpha = T.CreateTruncating(N.Attributes.Float("alpha", 1f)), beta = T.CreateTruncating(N.Attributes.Float("beta", 1f));
            int m = Y.Shape[0], n = Y.Shape[1], k = ta ? A.Shape[0] : A.Shape[1];
            var bias = I.Length > 2 ? I[2] : null;
            if (bias != null) BroadcastKernels.Expand(bias, Y);
            CpuKernels.Gemm(C, ta, tb, m, n, k, alpha, A.ReadOnlySpan<T>(), A.Shape[1], B.ReadOnlySpan<T>(), B.Shape[1], bias != null ? beta : T.Zero, Y.Span<T>(), n);
        }
    }

    public static Conv2dGeometry Geometry(OpSchemas.ConvParams p) =>
        new(p.N, p.Cin, p.H, p.W, p.Cout, p.Kh, p.Kw, p.Sh, p.Sw, p.PadTop, p.PadLeft, p.PadBottom, p.PadRight, p.Dh, p.Dw, p.Groups);

    private readonly record struct ConvAction(Node N, Tensor?[] I, Tensor Y, CpuContext C) : IFloatAction
    {
        public void Run<T>() where T : unmanaged, IFloatingPointIeee754<T>
        {
            var g = Geometry(OpSchemas.ResolveConv(N));
            var bias = I.Length > 2 && I[2] != null ? I[2]!.ReadOnlySpan<T>() : ReadOnlySpan<T>.Empty;
            CpuKernels.Conv2dForward(C, g, I[0]!.ReadOnlySpan<T>(), I[1]!.ReadOnlySpan<T>(), bias, Y.Span<T>());
        }
    }


}
