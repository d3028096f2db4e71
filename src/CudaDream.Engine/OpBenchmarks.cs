using System.Diagnostics;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Ops;
using CudaDream.Engine.Tensors;

namespace CudaDream.Engine;

/// <summary>One op timed on a backend: the median of the timed runs and the graph's own multiply-add count.</summary>
public sealed record OpTiming(string Name, double MedianSeconds, long MultiplyAdds, string Detail)
{
    public double GflopsPerSecond => 2.0 * MultiplyAdds / MedianSeconds / 1e9;
}

/// <summary>
/// The kernel micro-benchmarks of <c>cudadream bench --what kernels</c>: single-op graphs at SD 1.5 sizes, run through
/// a backend's executor exactly as a model's nodes are (so a GPU backend times its own kernels). Speed is measured
/// here and reported, never asserted in a test.
/// </summary>
public static class OpBenchmarks
{
    public static IEnumerable<OpTiming> Run(ExecutionBackend backend, int repeats)
    {
        yield return Time(backend, repeats, "gemm 512x512x512", "MatMul, fp32", b => b.Build(b.Node1(MatMulOps.MatMul, [b.Input(512, 512), b.Input(512, 512)])));
        // 1024³ is past the unpacked path's L2 bound: the packed Goto/BLIS kernel at the machine's vector width.
        yield return Time(backend, repeats, "gemm 1024x1024x1024", "MatMul, fp32", b => b.Build(b.Node1(MatMulOps.MatMul, [b.Input(1024, 1024), b.Input(1024, 1024)])));
        void Heads(Attributes a) { a.Set("heads", 8L); a.Set("scale", 1f / MathF.Sqrt(40)); }
        yield return Time(backend, repeats, "attention fwd N=1024 8x40", "FlashAttention-2 style, no N×N matrix",
            b => b.Build(b.Node1(AttentionOps.Attention, [b.Input(1, 1024, 320), b.Input(1, 1024, 320), b.Input(1, 1024, 320)], Heads)));
        yield return Time(backend, repeats, "attention fwd+bwd N=1024 8x40", "dq, dk, dv",
            b =>
            {
                var (q, k, v) = (b.Input(1, 1024, 320), b.Input(1, 1024, 320), b.Input(1, 1024, 320));
                return b.Train(b.Node(AttentionOps.Attention, [q, k, v], 2, Heads)[0], [], [q.Name, k.Name, v.Name]);
            });
        yield return Time(backend, repeats, "conv 3x3 320->320 @64x64 fwd", "",
            b => b.Build(b.Node1(ConvOps.Conv, [b.Input(1, 320, 64, 64), b.Const(b.Floats([320, 320, 3, 3]))],
                a => { a.Set("pads", new long[] { 1, 1, 1, 1 }); a.Set("kernel_shape", new long[] { 3, 3 }); })));
    }

    private static OpTiming Time(ExecutionBackend backend, int repeats, string name, string detail, Func<ConformanceGraphBuilder, ConformanceGraph> build)
    {
        var g = build(new ConformanceGraphBuilder(seed: 1));
        long macs = g.Graph.Nodes.Sum(OpRegistry.MultiplyAdds);
        using var executor = backend.CreateExecutor(ExecutionPlan.Create(g.Graph));
        executor.Run(g.Inputs); // warm-up: JIT, kernel compilation, first touch of the arena
        var times = new List<double>();
        for (int i = 0; i < Math.Max(1, repeats); i++)
        {
            var sw = Stopwatch.StartNew();
            executor.Run(g.Inputs);
            times.Add(sw.Elapsed.TotalSeconds);
        }
        times.Sort();
        return new OpTiming(name, times[times.Count / 2], macs, detail);
    }
}
