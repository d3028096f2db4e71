using System.Numerics;
using CudaDream.Engine.Backends;
using CudaDream.Engine.Backends.Cpu;
using CudaDream.Engine.Backends.Device;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Tensors;

namespace CudaDream.Engine.Ops;

/// <summary>Reductions over arbitrary axes, ArgMax/ArgMin, and Softmax (unfused path).</summary>
internal static class ReduceCpu
{
    public static Dictionary<string, CpuOpImpl> Table { get; } = Register();

    private static Dictionary<string, CpuOpImpl> Register()
    {
        var t = new Dictionary<string, CpuOpImpl>(StringComparer.Ordinal);
        foreach (var op in new[] { "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin" })
            t[op] = (n, i, o, c) => Dispatch.Numeric(n, i[0]!.DType, new ReduceAction(n, i[0]!, o[0]));
        t["ArgMax"] = (n, i, o, c) => Dispatch.Numeric(n, i[0]!.DType, new ArgAction(n, i[0]!, o[0], true));
        t["ArgMin"] = (n, i, o, c) => Dispatch.Numeric(n, i[0]!.DType, new ArgAction(n, i[0]!, o[0], false));
        t[GradBuilder.SumToOp] = (n, i, o, c) => Dispatch.Float(n, i[0]!.DType, new SumToAction(i[0]!, o[0]));
        return t;
    }

    /// <summary>Splits a shape into (outer, reduced, inner) extents when the reduced axes are contiguous; otherwise null.</summary>
    private static (long outer, long red, long inner)? Contiguous(int[] shape, int[] axes)
    {
        if (axes.Length == 0) return (Shapes.Numel(shape), 1, 1);
        for (int k = 1; k < axes.Length; k++) if (axes[k] != axes[k - 1] + 1) return null;
        long outer = 1, red = 1, inner = 1;
        for (int d = 0; d < shape.Length; d++)
        {
            if (d < axes[0]) outer *= shape[d];
            else if (d <= axes[^1]) red *= shape[d];
            else inner *= shape[d];
        }
        return (outer, red, inner);
    }

    private readonly record struct ReduceAction(Node N, Tensor X, Tensor Y) : INumericAction
    {
        public void Run<T>() where T : unmanaged, INumber<T>
        {
            var axes = ReduceOps.ReduceAxes(N);
            var x = X.ReadOnlySpan<T>(); var y = Y.Span<T>();
            var layout = Contiguous(X.Shape, axes);
            if (layout is var (outer, red, inner))
            {
                for (long o = 0; o < outer; o++)
                    for (long i = 0; i < inner; i++)
                    {
                        // Accumulate in double for float types so reductions of long rows stay accurate.
                        double acc = N.Op switch { "ReduceMax" => double.NegativeInfinity, "ReduceMin" => double.PositiveInfinity, _ => 0 };
                        for (long r = 0; r < red; r++)
                        {
                            double v = double.CreateTruncating(x[(int)((o * red + r) * inner + i)]);
                            acc = N.Op switch { "ReduceMax" => Math.Max(acc, v), "ReduceMin" => Math.Min(acc, v), _ => acc + v };
                        }
                        if (N.Op == "ReduceMean") acc /= red;
                        y[(int)(o * inner + i)] = T.CreateTruncating(acc);
                    }
                return;
            }
            // General case: walk the input once, accumulating into the output index with reduced axes dropped.
            var acc2 = new double[Y.Numel];
            if (N.Op == "ReduceMax") Array.Fill(acc2, double.NegativeInfinity);
            if (N.Op == "ReduceMin") Array.Fill(acc2, double.PositiveInfinity);
            var outStrides = new long[X.Rank];
            long s = 1;
            for (int d = X.Rank - 1; d >= 0; d--)
            {
                if (Array.IndexOf(axes, d) >= 0) { outStrides[d] = 0; continue; }
                outStrides[d] = s;
                s *= X.Shape[d];
            }
            long count = 1;
            foreach (var a in axes) count *= X.Shape[a];
            for (long w = 0; w < x.Length; w++)
            {
                long rem = w, off = 0;
                for (int d = X.Rank - 1; d >= 0; d--) { off += rem % X.Shape[d] * outStrides[d]; rem /= X.Shape[d]; }
                double v = double.CreateTruncating(x[(int)w]);
                acc2[off] = N.Op switch { "ReduceMax" => Math.Max(acc2[off], v), "ReduceMin" => Math.Min(acc2[off], v), _ => acc2[off] + v };
            }
            for (int k = 0; k < y.Length; k++) y[k] = T.CreateTruncating(N.Op == "ReduceMean" ? acc2[k] / count : acc2[k]);
        }
    }

    private readonly record struct ArgAction(Node N, Tensor X, Tensor Y, bool Max) : INumericAction
    {
        public void Run<T>() where T : unmanaged, INumber<T>
        {
            int axis = Shapes.Axis(N.Attributes.Int("axis", 0), X.Rank);
            bool last = N.Attributes.Int("select_last_index", 0) != 0;
            var (outer, red, inner) = Contiguous(X.Shape, new[] { axis })!.Value;
            var x = X.ReadOnlySpan<T>(); var y = Y.Span<long>();
            for (long o = 0; o < outer; o++)
                for (long i = 0; i < inner; i++)
                {
                    long best = 0;
                    T bv = x[(int)(o * red * inner + i)];
                    for (long r = 1; r < red; r++)
                    {
                        T v = x[(int)((o * red + r) * inner + i)];
                        bool better = Max ? (last ? v >= bv : v > bv) : (last ? v <= bv : v < bv);
                        if (better) { bv = v; best = r; }
                    }
                    y[(int)(o * inner + i)] = best;
                }
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
}
