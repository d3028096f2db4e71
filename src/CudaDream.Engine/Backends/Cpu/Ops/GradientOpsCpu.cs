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
        t[GradientOps.SumTo] = (n, i, o, c) => Dispatch.Float(n, i[0]!.DType, new SumToAction(i[0]!, o[0]));
    }

    private static ReadOnlySpan<T> Optional<T>(Tensor?[] inputs, int i) where T : unmanaged =>
        inputs.Length > i && inputs[i] != null ? inputs[i]!.ReadOnlySpan<T>() : ReadOnlySpan<T>.Empty;

    private static Span<T> OptionalOut<T>(Tensor[] outputs, int i, bool present) where T : unmanaged =>
        present && outputs.Length > i ? outputs[i].Span<T>() : Span<T>.Empty;

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


}
