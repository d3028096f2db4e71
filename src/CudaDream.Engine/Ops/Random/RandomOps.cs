using System.Numerics;
using CudaDream.Engine.Backends;
using CudaDream.Engine.Backends.Cpu;
using CudaDream.Engine.Backends.Device;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Randomness;
using CudaDream.Engine.Tensors;
using static CudaDream.Engine.Backends.KernelLaunchers;
using static CudaDream.Engine.Graph.Infer;

namespace CudaDream.Engine.Ops;

/// <summary>
/// The in-graph random draws, all from the counter-based generator (<see cref="CounterRng"/>) keyed by the
/// executor's (seed, step), so every backend draws the same numbers and a resumed run draws what it would have:
/// <list type="bullet">
/// <item>ONNX <c>RandomNormal</c> / <c>RandomNormalLike</c> (the VAE encoder's posterior sample): keyed by
/// (seed ⊕ node seed, step, LatentSample). No gradient flows through the draw.</item>
/// <item><c>CounterDropout(x)</c>: x·m/(1−p), m ~ Bernoulli(1−p) keyed by (seed, step, Dropout, <c>stream</c>, element)
/// (LoRA dropout) — the same node applied to dy is its own backward, no mask stored.</item>
/// </list>
/// Devices: <see cref="RandomKernels"/> (kernels/random.cu).
/// </summary>
public static class RandomOps
{
    public const string RandomNormal = "RandomNormal";
    public const string RandomNormalLike = "RandomNormalLike";
    public const string CounterDropout = "CounterDropout";

    internal static OpHome Home { get; } = new("Random", "random.cu",
    [
        new Op
        {
            Name = RandomNormalLike, Deterministic = false, Cpu = NormalCpu, Device = NormalDevice,
            InferShapes = n => Set(n, 0, n.Attributes.Has("dtype") ? OnnxType(n, n.Attributes.Int("dtype")) : In(n, 0).DType, ShapeOf(n, 0)),
            // The draw depends on its input's shape only (the VAE encoder's mean + std · ε): no gradient flows back through it.
            Gradient = (n, dy, need, b) => new Value?[n.Inputs.Count],
        },
        new Op
        {
            Name = RandomNormal, Deterministic = false, Cpu = NormalCpu, Device = NormalDevice,
            InferShapes = n => Set(n, 0, OnnxType(n, n.Attributes.Int("dtype", 1)), n.Attributes.Ints("shape")!.Select(d => (int)d).ToArray()),
        },
        new Op
        {
            Name = CounterDropout, Deterministic = false, InferShapes = SameAsInput,
            Gradient = (n, dy, need, b) => [b.Emit1(CounterDropout, [dy[0]], n.Attributes.Clone())],
            Cpu = (n, i, o, c) => Dispatch.Float(n, i[0]!.DType, new DropoutAction(n, i[0]!, o[0], c)),
            Device = s =>
            {
                s.RequireFloat();
                double p = s.Node.Attributes.Float("p", 0f);
                long stream = s.Node.Attributes.Int("stream", 0);
                var (x, y, n, key, t) = (s.In(0), s.Out(), s.OutCount(), s.RandomKey, s.InType(0));
                return () => RandomKernels.CounterDropout(s.Device, x.Ptr, y.Ptr, n, key.Ptr, p, stream, t);
            },
        },
    ], Conformance);

    private static DType OnnxType(Node n, long onnxType) =>
        DTypes.TryFromOnnx((int)onnxType, out var d) ? d : throw new GraphException(n, $"unsupported element type {onnxType}");

    /// <summary>The node's own seed (an attribute) is mixed into the run's seed, so two draws of one graph differ.</summary>
    private static ulong SeedXor(Node n) => n.Attributes.Has("seed") ? (ulong)BitConverter.SingleToUInt32Bits(n.Attributes.Float("seed", 0)) << 32 : 0;

    private static void NormalCpu(Node n, Tensor?[] i, Tensor[] o, CpuContext c)
    {
        var y = o[0];
        float mean = n.Attributes.Float("mean", 0f), scale = n.Attributes.Float("scale", 1f);
        var z = new float[y.Numel];
        CounterRng.FillNormal(z, c.Seed ^ SeedXor(n), c.Step, RandomPurpose.LatentSample);
        for (int k = 0; k < z.Length; k++) z[k] = mean + scale * z[k];
        Tensor.FromArray(z, y.Shape).To(y.DType).Data.Span.CopyTo(y.Data.Span);
    }

    private static Action NormalDevice(DeviceStepBuilder s)
    {
        if (s.OutType() != DType.F32) throw new NotSupportedException($"RandomNormal into {s.OutType()}");
        var a = s.Node.Attributes;
        float mean = a.Float("mean", 0f), scale = a.Float("scale", 1f);
        ulong seedXor = SeedXor(s.Node);
        var (y, n, key) = (s.Out(), s.OutCount(), s.RandomKey);
        return () => RandomKernels.Normal(s.Device, y.Ptr, n, key.Ptr, seedXor, RandomPurpose.LatentSample, mean, scale);
    }

    /// <summary>Inverted dropout: the backward node recomputes the same mask, so nothing is stored between the passes.</summary>
    private readonly record struct DropoutAction(Node N, Tensor X, Tensor Y, CpuContext C) : IFloatAction
    {
        public void Run<T>() where T : unmanaged, IFloatingPointIeee754<T>
        {
            double p = N.Attributes.Float("p", 0f);
            long stream = N.Attributes.Int("stream", 0);
            var x = X.ReadOnlySpan<T>(); var y = Y.Span<T>();
            T keep = T.CreateTruncating(1.0 / (1.0 - p));
            for (int i = 0; i < x.Length; i++)
            {
                float u = CounterRng.Uniform(C.Seed, C.Step, RandomPurpose.Dropout, (stream << 40) + i);
                y[i] = u < p ? T.Zero : x[i] * keep;
            }
        }
    }

    private static IEnumerable<ConformanceCase> Conformance()
    {
        yield return new("RandomNormalLike draws the CPU's numbers", "random", b =>
            b.Build(b.Node1(RandomNormalLike, [b.Input(3, 37)], a => a.Set("seed", 5f))));
        yield return new("RandomNormal with mean and scale", "random", b =>
            b.Build(b.Node1(RandomNormal, [], a => { a.Set("shape", new long[] { 5, 9 }); a.Set("mean", 1f); a.Set("scale", 2f); })));
        yield return new("train CounterDropout (the mask the CPU draws)", "random", b =>
        {
            var x = b.Input(3, 50);
            var w = b.Const(b.Floats([50, 4]));
            var d = b.Node1(CounterDropout, [x], a => { a.Set("p", 0.3f); a.Set("stream", 7L); });
            return b.Train(b.Node1(MatMulOps.Linear, [d, w]), [w], [x.Name]);
        }, 1e-4);
    }
}

/// <summary>Launchers of kernels/random.cu; <c>key</c> points at two u64 in device memory: seed, step.</summary>
public static class RandomKernels
{
    /// <summary>y = mean + scale·N(0,1) drawn as CounterRng.FillNormal(seed ^ seedXor, step, purpose).</summary>
    public static void Normal(IKernelDevice d, DevicePtr y, long n, DevicePtr key, ulong seedXor, RandomPurpose purpose, float mean = 0, float scale = 1) =>
        d.Launch("random_normal_f32", Grid1D((n + 3) / 4), Block256, 0,
            new KernelArgs().Ptr(y).I64(n).Ptr(key).Value(seedXor).Value((uint)purpose).F32(mean).F32(scale));

    /// <summary>Inverted dropout with the counter-based mask of element (stream &lt;&lt; 40) + i.</summary>
    public static void CounterDropout(IKernelDevice d, DevicePtr x, DevicePtr y, long n, DevicePtr key, double p, long stream, DType t = DType.F32) =>
        d.Launch(KernelName("counter_dropout", t), Grid1D(n), Block256, 0,
            new KernelArgs().Ptr(x).Ptr(y).I64(n).Ptr(key).F32((float)p).F32((float)(1.0 / (1.0 - p))).I64(stream));
}
