using System.Numerics;
using CudaDream.Engine.Backends;
using CudaDream.Engine.Backends.Cpu;
using CudaDream.Engine.Backends.Device;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Tensors;
using static CudaDream.Engine.Backends.Cpu.FastKernels;
using static CudaDream.Engine.Graph.Infer;

namespace CudaDream.Engine.Ops;

/// <summary>
/// Matrix products, forward and backward:
/// <list type="bullet">
/// <item>ONNX <c>MatMul</c> (numpy.matmul with batch broadcasting) and <c>Gemm</c> (Y = α·op(A)·op(B) + β·C).</item>
/// <item>The fused <c>Linear(x[...,K], W, bias?)</c>: y = alpha·x·W (+bias); <c>transB</c> = 1 when W is stored [N,K]
/// (torch layout), 0 when [K,N]; <c>alpha</c> defaults to 1 (LoRA's up projection carries its scale here). Its input
/// gradient is a Linear with the other weight layout; <c>LinearGradWeight(x, dy)</c> → dW in the weight's layout.</item>
/// <item>CPU: <see cref="GemmReference"/> (the oracle), <see cref="GemmFast"/> (packed panels) and
/// <see cref="GemmUnpacked"/> (op(B) in place when it fits in L2); devices: <see cref="MatMulKernels"/> (the device's
/// GEMM: cuBLAS on cuda, the emulator's column-major reference GEMM on emu).</item>
/// </list>
/// </summary>
public static class MatMulOps
{
    public const string MatMul = "MatMul";
    public const string Gemm = "Gemm";
    public const string Linear = "Linear";
    public const string LinearGradWeight = "LinearGradWeight";

    internal static OpHome Home { get; } = new("MatMul", null,
    [
        new Op
        {
            Name = MatMul, InferShapes = n => Set(n, 0, In(n, 0).DType, MatMulDims(n, ShapeOf(n, 0), ShapeOf(n, 1)).OutShape),
            MultiplyAdds = n => { var (_, m, k, nn, batch) = MatMulDims(n, ShapeOf(n, 0), ShapeOf(n, 1)); return Shapes.Numel(batch) * m * k * nn; },
            Gradient = MatMulGradient,
            Cpu = (n, i, o, c) => Dispatch.Float(n, i[0]!.DType, new MatMulAction(n, i[0]!, i[1]!, o[0], c)),
            Device = MatMulDevice,
        },
        new Op
        {
            Name = Gemm, InferShapes = InferGemm,
            MultiplyAdds = n => { var s = ShapeOf(n, 0); var o = n.Output().Shape!; long k = n.Attributes.Int("transA", 0) != 0 ? s[0] : s[1]; return (long)o[0] * o[1] * k; },
            Gradient = GemmGradient,
            Cpu = (n, i, o, c) => Dispatch.Float(n, i[0]!.DType, new GemmAction(n, i, o[0], c)),
            Device = GemmDevice,
        },
        new Op
        {
            Name = Linear, InferShapes = InferLinear, MultiplyAdds = n => { var (k, nn) = LinearDims(n); return Shapes.Numel(ShapeOf(n, 0)) / k * k * nn; },
            Gradient = LinearGradient,
            Cpu = (n, i, o, c) => Dispatch.Float(n, i[0]!.DType, new LinearAction(n, i, o[0], c)),
            Device = LinearDevice,
        },
        new Op
        {
            Name = LinearGradWeight,
            InferShapes = n =>
            {
                var x = ShapeOf(n, 0);
                var dy = ShapeOf(n, 1);
                Set(n, 0, In(n, 0).DType, n.Attributes.Int("transB", 0) != 0 ? [dy[^1], x[^1]] : [x[^1], dy[^1]]);
            },
            MultiplyAdds = n => Shapes.Numel(ShapeOf(n, 0)) * ShapeOf(n, 1)[^1],
            Cpu = (n, i, o, c) => Dispatch.Float(n, i[0]!.DType, new LinearGradWeightAction(n, i[0]!, i[1]!, o[0], c)),
            Device = LinearGradWeightDevice,
        },
    ], Conformance);

    // ------------------------------------------------------------------ shape rules
    /// <summary>numpy.matmul shapes: 1-D operands are promoted and the promoted dimension dropped.</summary>
    public static (int[] OutShape, int M, int K, int N, int[] Batch) MatMulDims(Node node, int[] a, int[] b)
    {
        if (a.Length == 0 || b.Length == 0) throw new GraphException(node, "MatMul of a scalar");
        var a2 = a.Length == 1 ? new[] { 1, a[0] } : a;
        var b2 = b.Length == 1 ? new[] { b[0], 1 } : b;
        int m = a2[^2], k = a2[^1], k2 = b2[^2], nn = b2[^1];
        if (k != k2) throw new GraphException(node, $"MatMul inner dimensions differ: {Shapes.Format(a)} × {Shapes.Format(b)}");
        var batch = Shapes.Broadcast(a2[..^2], b2[..^2]) ?? throw new GraphException(node, $"MatMul batch dimensions do not broadcast: {Shapes.Format(a)} × {Shapes.Format(b)}");
        var o = new List<int>(batch);
        if (a.Length > 1) o.Add(m);
        if (b.Length > 1) o.Add(nn);
        return (o.ToArray(), m, k, nn, batch);
    }

    private static void InferGemm(Node n)
    {
        var a = ShapeOf(n, 0);
        var b = ShapeOf(n, 1);
        if (a.Length != 2 || b.Length != 2) throw new GraphException(n, "Gemm needs 2-D inputs");
        bool ta = n.Attributes.Int("transA", 0) != 0, tb = n.Attributes.Int("transB", 0) != 0;
        int m = ta ? a[1] : a[0], k = ta ? a[0] : a[1], k2 = tb ? b[1] : b[0], nn = tb ? b[0] : b[1];
        if (k != k2) throw new GraphException(n, $"Gemm inner dimensions differ: {Shapes.Format(a)} × {Shapes.Format(b)}");
        Set(n, 0, In(n, 0).DType, [m, nn]);
    }

    /// <summary>(K, N) of a Linear node's weight.</summary>
    public static (int K, int N) LinearDims(Node n)
    {
        var w = ShapeOf(n, 1);
        if (w.Length != 2) throw new GraphException(n, $"Linear weight must be 2-D, got {Shapes.Format(w)}");
        return n.Attributes.Int("transB", 0) != 0 ? (w[1], w[0]) : (w[0], w[1]);
    }

    private static void InferLinear(Node n)
    {
        var x = ShapeOf(n, 0);
        var (k, nn) = LinearDims(n);
        if (x[^1] != k) throw new GraphException(n, $"Linear input {Shapes.Format(x)} does not match weight K={k}");
        var o = (int[])x.Clone();
        o[^1] = nn;
        Set(n, 0, In(n, 0).DType, o);
    }

    // ------------------------------------------------------------------ gradient rules
    /// <summary>y = α·x·W_eff + bias: dx = α·dy·W_effᵀ (a Linear with the other weight layout), dW = α·xᵀ·dy, dbias = Σ dy.</summary>
    private static Value?[] LinearGradient(Node n, Value?[] dy, bool[] need, GradBuilder b)
    {
        long transB = n.Attributes.Int("transB", 0);
        float alpha = n.Attributes.Float("alpha", 1f);
        var g = dy[0]!;
        var r = new Value?[n.Inputs.Count];
        if (need[0]) r[0] = b.Emit1(Linear, [g, n.Input(1)], new Attributes().Set("transB", 1 - transB).Set("alpha", alpha));
        if (need[1]) r[1] = b.Emit1(LinearGradWeight, [n.Input(0), g], new Attributes().Set("transB", transB).Set("alpha", alpha));
        if (n.Inputs.Count > 2 && need[2]) r[2] = b.SumTo(g, n.Input(2).Shape!);
        return r;
    }

    /// <summary>numpy.matmul: dA = dy·Bᵀ, dB = Aᵀ·dy, each summed over broadcast batch dimensions.</summary>
    private static Value?[] MatMulGradient(Node n, Value?[] dy, bool[] need, GradBuilder b)
    {
        var a = n.Input(0);
        var bb = n.Input(1);
        if (a.Rank < 2 || bb.Rank < 2) throw new GraphException(n, "gradient of MatMul with 1-D operands is not supported");
        var g = dy[0]!;
        return
        [
            need[0] ? b.SumTo(b.Emit1(MatMul, [g, b.TransposeLast2(bb)]), a.Shape!) : null,
            need[1] ? b.SumTo(b.Emit1(MatMul, [b.TransposeLast2(a), g]), bb.Shape!) : null,
        ];
    }

    /// <summary>Y = α·op(A)·op(B) + β·C: d op(A) = α·dY·op(B)ᵀ, d op(B) = α·op(A)ᵀ·dY (transposed back when stored transposed), dC = β·Σ dY.</summary>
    private static Value?[] GemmGradient(Node n, Value?[] dy, bool[] need, GradBuilder b)
    {
        var a = n.Attributes;
        bool ta = a.Int("transA", 0) != 0, tb = a.Int("transB", 0) != 0;
        var alpha = b.Scalar(a.Float("alpha", 1f), n.Output().DType);
        var g = dy[0]!;
        var opA = ta ? b.Transpose(n.Input(0), [1, 0]) : n.Input(0);
        var opB = tb ? b.Transpose(n.Input(1), [1, 0]) : n.Input(1);
        var r = new Value?[n.Inputs.Count];
        if (need[0])
        {
            var dOpA = b.Mul(b.Emit1(MatMul, [g, b.Transpose(opB, [1, 0])]), alpha);
            r[0] = ta ? b.Transpose(dOpA, [1, 0]) : dOpA;
        }
        if (need[1])
        {
            var dOpB = b.Mul(b.Emit1(MatMul, [b.Transpose(opA, [1, 0]), g]), alpha);
            r[1] = tb ? b.Transpose(dOpB, [1, 0]) : dOpB;
        }
        if (n.Inputs.Count > 2 && n.Inputs[2] != null && need[2])
            r[2] = b.SumTo(b.Mul(g, b.Scalar(a.Float("beta", 1f), n.Output().DType)), n.Input(2).Shape!);
        return r;
    }

    // ------------------------------------------------------------------ CPU
    public static class Cpu
    {
        public static void Gemm<T>(CpuContext c, bool transA, bool transB, int m, int n, int k, T alpha, ReadOnlySpan<T> a, int lda, ReadOnlySpan<T> b, int ldb, T beta, Span<T> y, int ldc)
            where T : unmanaged, IFloatingPointIeee754<T>
        {
            if (Use<T>(c)) GemmFast.Gemm(transA, transB, m, n, k, F(alpha), F(a), lda, F(b), ldb, F(beta), F(y), ldc);
            else GemmReference.Gemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, y, ldc);
        }
    }

    /// <summary>numpy.matmul with batch broadcasting, as GEMMs over the broadcast batch.</summary>
    private readonly record struct MatMulAction(Node N, Tensor A, Tensor B, Tensor Y, CpuContext C) : IFloatAction
    {
        public void Run<T>() where T : unmanaged, IFloatingPointIeee754<T>
        {
            var (_, m, k, n, batch) = MatMulDims(N, A.Shape, B.Shape);
            var a = A.ReadOnlySpan<T>(); var b = B.ReadOnlySpan<T>(); var y = Y.Span<T>();
            var aBatch = A.Rank > 2 ? A.Shape[..^2] : Array.Empty<int>();
            var bBatch = B.Rank > 2 ? B.Shape[..^2] : Array.Empty<int>();
            long batches = Shapes.Numel(batch);
            if (bBatch.Length == 0)
            {
                // A weight shared by every batch: one GEMM with the batch folded into M.
                Cpu.Gemm(C, false, false, checked((int)(batches * m)), n, k, T.One, a, k, b, n, T.Zero, y, n);
                return;
            }
            var plan = new BroadcastPlan(batch.Length == 0 ? [1] : batch, aBatch.Length == 0 ? [1] : aBatch, bBatch.Length == 0 ? [1] : bBatch);
            long aMat = (long)m * k, bMat = (long)k * n, yMat = (long)m * n;
            for (long bi = 0; bi < batches; bi++)
            {
                long row = bi / plan.Inner, col = bi % plan.Inner;
                long aOff = (plan.Offset(0, row) + col * plan.InnerStride[0]) * aMat;
                long bOff = (plan.Offset(1, row) + col * plan.InnerStride[1]) * bMat;
                Cpu.Gemm(C, false, false, m, n, k, T.One, a.Slice((int)aOff, (int)aMat), k, b.Slice((int)bOff, (int)bMat), n, T.Zero, y.Slice((int)(bi * yMat), (int)yMat), n);
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
            Cpu.Gemm(C, ta, tb, m, n, k, alpha, A.ReadOnlySpan<T>(), A.Shape[1], B.ReadOnlySpan<T>(), B.Shape[1], bias != null ? beta : T.Zero, Y.Span<T>(), n);
        }
    }

    private readonly record struct LinearAction(Node N, Tensor?[] I, Tensor Y, CpuContext C) : IFloatAction
    {
        public void Run<T>() where T : unmanaged, IFloatingPointIeee754<T>
        {
            var x = I[0]!; var w = I[1]!;
            bool tb = N.Attributes.Int("transB", 0) != 0;
            var (k, n) = LinearDims(N);
            int rows = x.Numel / k;
            var y = Y.Span<T>();
            var bias = I.Length > 2 ? I[2] : null;
            if (bias != null)
            {
                var b = bias.ReadOnlySpan<T>();
                for (int r = 0; r < rows; r++) b.CopyTo(y.Slice(r * n, n));
            }
            T alpha = T.CreateTruncating(N.Attributes.Float("alpha", 1f));
            Cpu.Gemm(C, false, tb, rows, n, k, alpha, x.ReadOnlySpan<T>(), k, w.ReadOnlySpan<T>(), tb ? k : n, bias != null ? T.One : T.Zero, y, n);
        }
    }

    /// <summary>dW = α·xᵀ·dy over all leading rows (stored [K,N]), or its transpose α·dyᵀ·x (stored [N,K]).</summary>
    private readonly record struct LinearGradWeightAction(Node N, Tensor X, Tensor Dy, Tensor Dw, CpuContext C) : IFloatAction
    {
        public void Run<T>() where T : unmanaged, IFloatingPointIeee754<T>
        {
            int k = X.Shape[^1], n = Dy.Shape[^1], rows = X.Numel / k;
            T alpha = T.CreateTruncating(N.Attributes.Float("alpha", 1f));
            if (N.Attributes.Int("transB", 0) != 0)
                Cpu.Gemm(C, true, false, n, k, rows, alpha, Dy.ReadOnlySpan<T>(), n, X.ReadOnlySpan<T>(), k, T.Zero, Dw.Span<T>(), k);
            else
                Cpu.Gemm(C, true, false, k, n, rows, alpha, X.ReadOnlySpan<T>(), k, Dy.ReadOnlySpan<T>(), n, T.Zero, Dw.Span<T>(), n);
        }
    }

    // ------------------------------------------------------------------ devices
    /// <summary>numpy.matmul: one strided-batched GEMM when every batch sits a fixed stride from the last, else one GEMM per batch.</summary>
    private static Action MatMulDevice(DeviceStepBuilder s)
    {
        s.RequireFloat();
        var (a, b) = (s.InShape(0), s.InShape(1));
        var (_, m, k, n, batch) = MatMulDims(s.Node, a, b);
        var (pa, pb, py, t) = (s.In(0), s.In(1), s.Out(), s.InType(0));
        long batches = Shapes.Numel(batch);
        var bBatch = b.Length > 2 ? b[..^2] : Array.Empty<int>();
        if (bBatch.Length == 0)
        {
            // A weight shared by every batch: the batch folds into M.
            int rows = checked((int)(batches * m));
            return () => MatMulKernels.MatMul(s.Device, false, false, rows, n, k, pa.Ptr, pb.Ptr, py.Ptr, t: t);
        }
        var aBatch = a.Length > 2 ? a[..^2] : Array.Empty<int>();
        var offA = BatchOffsets(aBatch, batch, (long)m * k);
        var offB = BatchOffsets(bBatch, batch, (long)k * n);
        long yMat = (long)m * n;
        if (IsArithmetic(offA) && IsArithmetic(offB))
        {
            long strideA = batches > 1 ? offA[1] : 0, strideB = batches > 1 ? offB[1] : 0;
            int count = checked((int)batches);
            return () => MatMulKernels.MatMul(s.Device, false, false, m, n, k, pa.Ptr, pb.Ptr, py.Ptr, batch: count, strideA: strideA, strideB: strideB, strideC: yMat, t: t);
        }
        long es = t.Size();
        return () =>
        {
            for (int i = 0; i < batches; i++)
                MatMulKernels.MatMul(s.Device, false, false, m, n, k, pa.Ptr + offA[i] * es, pb.Ptr + offB[i] * es, py.Ptr + i * yMat * es, t: t);
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
    private static Action GemmDevice(DeviceStepBuilder s)
    {
        s.RequireFloat();
        var (aShape, bShape, yShape) = (s.InShape(0), s.InShape(1), s.OutShape());
        bool ta = s.Node.Attributes.Int("transA", 0) != 0, tb = s.Node.Attributes.Int("transB", 0) != 0;
        float alpha = s.Node.Attributes.Float("alpha", 1f), beta = s.Node.Attributes.Float("beta", 1f);
        int m = yShape[0], n = yShape[1], k = ta ? aShape[0] : aShape[1];
        var (pa, pb, py, t) = (s.In(0), s.In(1), s.Out(), s.InType(0));
        Action? bias = s.HasInput(2)
            ? LayoutDevice.Copy(s, s.In(2), 0, KernelLaunchers.BroadcastStrides(s.InShape(2), yShape), py, 0, Shapes.Strides(yShape), yShape)
            : null;
        return () =>
        {
            bias?.Invoke();
            MatMulKernels.MatMul(s.Device, ta, tb, m, n, k, pa.Ptr, pb.Ptr, py.Ptr, alpha, bias != null ? beta : 0, t: t);
        };
    }

    /// <summary>y = alpha·x·W + bias: the bias is broadcast into y, then one GEMM accumulates onto it (beta = 1).</summary>
    private static Action LinearDevice(DeviceStepBuilder s)
    {
        s.RequireFloat();
        var (k, n) = LinearDims(s.Node);
        bool tb = s.Node.Attributes.Int("transB", 0) != 0;
        float alpha = s.Node.Attributes.Float("alpha", 1f);
        int rows = checked((int)(s.InCount(0) / k));
        var (x, w, y, t) = (s.In(0), s.In(1), s.Out(), s.InType(0));
        Action? bias = s.HasInput(2)
            ? LayoutDevice.Copy(s, s.In(2), 0, [0, 1], y, 0, [n, 1], [rows, n])
            : null;
        return () =>
        {
            bias?.Invoke();
            MatMulKernels.MatMul(s.Device, false, tb, rows, n, k, x.Ptr, w.Ptr, y.Ptr, alpha, bias != null ? 1 : 0, t: t);
        };
    }

    /// <summary>dW = α·xᵀ·dy over all leading rows (stored [K,N]), or α·dyᵀ·x (stored [N,K]).</summary>
    private static Action LinearGradWeightDevice(DeviceStepBuilder s)
    {
        s.RequireFloat();
        int k = s.InShape(0)[^1], n = s.InShape(1)[^1];
        int rows = checked((int)(s.InCount(0) / Math.Max(k, 1)));
        float alpha = s.Node.Attributes.Float("alpha", 1f);
        bool tb = s.Node.Attributes.Int("transB", 0) != 0;
        var (x, dy, dw, t) = (s.In(0), s.In(1), s.Out(), s.InType(0));
        if (tb) return () => MatMulKernels.MatMul(s.Device, true, false, n, k, rows, dy.Ptr, x.Ptr, dw.Ptr, alpha, t: t);
        return () => MatMulKernels.MatMul(s.Device, true, false, k, n, rows, x.Ptr, dy.Ptr, dw.Ptr, alpha, t: t);
    }

    // ------------------------------------------------------------------ conformance
    private static IEnumerable<ConformanceCase> Conformance()
    {
        yield return new("MatMul batched, broadcast, vector and shared weight", "gemm", b =>
        {
            var a4 = b.Input(2, 3, 5, 4);
            return b.Build(b.Node1(MatMul, [a4, b.Input(2, 3, 4, 6)]), b.Node1(MatMul, [b.Input(2, 1, 5, 4), b.Input(3, 4, 6)]),
                b.Node1(MatMul, [a4, b.Const(b.Floats([4, 7]))]), b.Node1(MatMul, [b.Input(4), b.Input(3, 4, 2)]));
        }, 1e-5);
        yield return new("Gemm transB alpha beta bias", "gemm", b =>
            b.Build(b.Node1(Gemm, [b.Input(5, 6), b.Const(b.Floats([4, 6])), b.Const(b.Floats([4]))], a => { a.Set("transB", 1L); a.Set("alpha", 0.5f); a.Set("beta", 2f); }),
                b.Node1(Gemm, [b.Input(6, 5), b.Input(6, 3)], a => a.Set("transA", 1L))));
        yield return new("Linear transB bias alpha / plain", "gemm", b =>
            b.Build(b.Node1(Linear, [b.Input(2, 5, 6), b.Const(b.Floats([4, 6])), b.Const(b.Floats([4]))], a => { a.Set("transB", 1L); a.Set("alpha", 0.5f); }),
                b.Node1(Linear, [b.Input(7, 6), b.Const(b.Floats([6, 3]))])));
    }
}

/// <summary>The device GEMM behind every matrix product (cuBLAS on cuda; the emulator's reference GEMM on emu).</summary>
public static class MatMulKernels
{
    /// <summary>
    /// Row-major C[M,N] = alpha·op(A)·op(B) + beta·C (A stored [M,K], or [K,M] when transA; B stored
    /// [K,N], or [N,K] when transB), mapped onto the column-major device GEMM as Cᵀ = op(B)ᵀ·op(A)ᵀ.
    /// </summary>
    public static void MatMul(IKernelDevice d, bool transA, bool transB, int M, int N, int K, DevicePtr A, DevicePtr B, DevicePtr C,
        float alpha = 1, float beta = 0, int batch = 1, long strideA = 0, long strideB = 0, long strideC = 0, DType t = DType.F32) =>
        d.Gemm(new GemmArgs(transB ? GemmOp.T : GemmOp.N, transA ? GemmOp.T : GemmOp.N, N, M, K, alpha,
            B, transB ? K : N, strideB, A, transA ? M : K, strideA, beta, C, N, strideC, batch, t));
}
