using System.Numerics;
using CudaDream.Engine.Autodiff;
using CudaDream.Engine.Backends.Cpu;
using CudaDream.Engine.Backends.Cpu.Kernels;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Graph.Ops;
using CudaDream.Engine.Randomness;
using CudaDream.Engine.Tensors;

namespace CudaDream.Engine.Backends.Cpu.Ops;

/// <summary>CPU implementations of the loss and backward ops (<see cref="GradientOps"/>), generic over float and double.</summary>
internal static class GradientOpsCpu
{
    public static void Register(Dictionary<string, CpuOpImpl> t)
    {
        t[GradientOps.LinearGradWeight] = (n, i, o, c) => Dispatch.Float(n, i[0]!.DType, new LinearGradWeightAction(n, i[0]!, i[1]!, o[0], c));
        t[GradientOps.SumTo] = (n, i, o, c) => Dispatch.Float(n, i[0]!.DType, new SumToAction(i[0]!, o[0]));
        t[GradientOps.ConvGradInput] = (n, i, o, c) => Dispatch.Float(n, i[0]!.DType, new ConvGradAction(n, i, o[0], c, true));
        t[GradientOps.ConvGradWeight] = (n, i, o, c) => Dispatch.Float(n, i[0]!.DType, new ConvGradAction(n, i, o[0], c, false));
    }

    private static ReadOnlySpan<T> Optional<T>(Tensor?[] inputs, int i) where T : unmanaged =>
        inputs.Length > i && inputs[i] != null ? inputs[i]!.ReadOnlySpan<T>() : ReadOnlySpan<T>.Empty;

    private static Span<T> OptionalOut<T>(Tensor[] outputs, int i, bool present) where T : unmanaged =>
        present && outputs.Length > i ? outputs[i].Span<T>() : Span<T>.Empty;

    /// <summary>dW = α·xᵀ·dy over all leading rows (stored [K,N]), or its transpose α·dyᵀ·x (stored [N,K]).</summary>
    private readonly record struct LinearGradWeightAction(Node N, Tensor X, Tensor Dy, Tensor Dw, CpuContext C) : IFloatAction
    {
        public void Run<T>() where T : unmanaged, IFloatingPointIeee754<T>
        {
            int k = X.Shape[^1], n = Dy.Shape[^1], rows = X.Numel / k;
            T alpha = T.CreateTruncating(N.Attributes.Float("alpha", 1f));
            if (N.Attributes.Int("transB", 0) != 0)
                CpuKernels.Gemm(C, true, false, n, k, rows, alpha, Dy.ReadOnlySpan<T>(), n, X.ReadOnlySpan<T>(), k, T.Zero, Dw.Span<T>(), k);
            else
                CpuKernels.Gemm(C, true, false, k, n, rows, alpha, X.ReadOnlySpan<T>(), k, Dy.ReadOnlySpan<T>(), n, T.Zero, Dw.Span<T>(), n);
        }
    }

    /// <summary>Sum over the dimensions along which the target shape was broadcast.</summary>
    private readonly record struct SumToAction(Tensor X, Tensor Y) : IFloatAction
    {
        public void Run<T>() where T : unmanaged, IFloatingPointIeee754<T>
        {
            var plan = new BroadcastPlan(X.Shape, Y.Shape);
            var x = X.ReadOnlySpan<T>();
            var y = Y.Span<T>();
            y.Clear();
            for (long row = 0; row < plan.Rows; row++)
            {
                long oy = plan.Offset(0, row), ox = row * plan.Inner;
                long step = plan.InnerStride[0];
                if (step == 0)
                {
                    T acc = T.Zero;
                    for (int i = 0; i < plan.Inner; i++) acc += x[(int)(ox + i)];
                    y[(int)oy] += acc;
                }
                else
                    for (int i = 0; i < plan.Inner; i++) y[(int)(oy + i * step)] += x[(int)(ox + i)];
            }
        }
    }

    internal static Conv2dGeometry Geometry(Node n)
    {
        var x = n.Attributes.Ints("input_shape")!;
        var w = n.Attributes.Ints("weight_shape")!;
        var s = n.Attributes.Ints("strides") ?? new long[] { 1, 1 };
        var p = n.Attributes.Ints("pads") ?? new long[] { 0, 0, 0, 0 };
        var d = n.Attributes.Ints("dilations") ?? new long[] { 1, 1 };
        return new Conv2dGeometry((int)x[0], (int)x[1], (int)x[2], (int)x[3], (int)w[0], (int)w[2], (int)w[3], (int)s[0], (int)s[1],
            (int)p[0], (int)p[1], (int)p[2], (int)p[3], (int)d[0], (int)d[1], (int)n.Attributes.Int("group", 1));
    }

    private readonly record struct ConvGradAction(Node N, Tensor?[] I, Tensor Y, CpuContext C, bool Input) : IFloatAction
    {
        public void Run<T>() where T : unmanaged, IFloatingPointIeee754<T>
        {
            var g = Geometry(N);
            if (Input) CpuKernels.Conv2dBackwardData(C, g, I[0]!.ReadOnlySpan<T>(), I[1]!.ReadOnlySpan<T>(), Y.Span<T>());
            else CpuKernels.Conv2dBackwardWeight(C, g, I[0]!.ReadOnlySpan<T>(), I[1]!.ReadOnlySpan<T>(), Y.Span<T>());
        }
    }


}
