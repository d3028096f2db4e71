using System.Numerics;
using CudaDream.Engine.Backends.Cpu;
using CudaDream.Engine.Backends.Cpu.Kernels;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Graph.Ops;
using CudaDream.Engine.Tensors;

namespace CudaDream.Engine.Backends.Cpu.Ops;

/// <summary>
/// CPU implementations of the fused ops (<see cref="FusedOps"/>). Normalisation and attention nodes
/// may carry extra outputs for the statistics the backward pass reuses (mean/rstd, log-sum-exp);
/// without them the statistics go to scratch memory.
/// </summary>
internal static class FusedOpsCpu
{
    public static void Register(Dictionary<string, CpuOpImpl> t)
    {
        t[FusedOps.Linear] = (n, i, o, c) => Dispatch.Float(n, i[0]!.DType, new LinearAction(n, i, o[0], c));
    }

    private readonly record struct LinearAction(Node N, Tensor?[] I, Tensor Y, CpuContext C) : IFloatAction
    {
        public void Run<T>() where T : unmanaged, IFloatingPointIeee754<T>
        {
            var x = I[0]!; var w = I[1]!;
            bool tb = N.Attributes.Int("transB", 0) != 0;
            var (k, n) = FusedOps.LinearDims(N);
            int rows = x.Numel / k;
            var y = Y.Span<T>();
            var bias = I.Length > 2 ? I[2] : null;
            if (bias != null)
            {
                var b = bias.ReadOnlySpan<T>();
                for (int r = 0; r < rows; r++) b.CopyTo(y.Slice(r * n, n));
            }
            T alpha = T.CreateTruncating(N.Attributes.Float("alpha", 1f));
            CpuKernels.Gemm(C, false, tb, rows, n, k, alpha, x.ReadOnlySpan<T>(), k, w.ReadOnlySpan<T>(), tb ? k : n, bias != null ? T.One : T.Zero, y, n);
        }
    }

    private static ReadOnlySpan<T> Optional<T>(Tensor?[] inputs, int i) where T : unmanaged =>
        inputs.Length > i && inputs[i] != null ? inputs[i]!.ReadOnlySpan<T>() : ReadOnlySpan<T>.Empty;
}
