using CudaDream.Engine.Graph;
using CudaDream.Engine.Randomness;
using CudaDream.Engine.Tensors;
using CudaDream.Engine.Training;
using CudaDream.Engine.Training.Lora;
using CudaDream.Engine.Training.Optimizers;
using CudaDream.TestSupport;
using Xunit;
using Xunit.Abstractions;

namespace CudaDream.Engine.Tests.Training;

/// <summary>
/// [E2] acceptance: rank-4 LoRA on the tiny UNet overfits one fixed batch — four (latent, timestep, noise)
/// examples at 8×8 — with 100 AdamW steps; the loss on that fixed set falls at least 5×, and the same
/// seed gives bit-identical LoRA weights on two runs.
/// </summary>
public class OverfitTests
{
    private readonly ITestOutputHelper _out;
    public OverfitTests(ITestOutputHelper output) => _out = output;

    private const int Batch = 4, Size = 8, Steps = 100;

    /// <summary>ᾱ_t of SD's scaled-linear schedule (β from 0.00085 to 0.012 in √ space, 1000 steps).</summary>
    private static double AlphaBar(int t)
    {
        double prod = 1;
        for (int i = 0; i <= t; i++)
        {
            double sqrtBeta = Math.Sqrt(0.00085) + (Math.Sqrt(0.012) - Math.Sqrt(0.00085)) * i / 999.0;
            prod *= 1 - sqrtBeta * sqrtBeta;
        }
        return prod;
    }

    private static Dictionary<string, Tensor> FixedBatch()
    {
        int per = 4 * Size * Size;
        var x0 = new float[Batch * per];
        var noise = new float[Batch * per];
        var text = new float[Batch * 77 * 32];
        CounterRng.FillNormal(x0, 100, 0, RandomPurpose.Noise);
        CounterRng.FillNormal(noise, 101, 0, RandomPurpose.Noise);
        CounterRng.FillNormal(text, 102, 0, RandomPurpose.Noise);
        var t = new float[Batch];
        var xt = new float[x0.Length];
        for (int b = 0; b < Batch; b++)
        {
            int ti = CounterRng.UniformInt(103, 0, RandomPurpose.Timestep, b, 1000);
            t[b] = ti;
            double ab = AlphaBar(ti);
            for (int i = 0; i < per; i++) xt[b * per + i] = (float)(Math.Sqrt(ab) * x0[b * per + i] + Math.Sqrt(1 - ab) * noise[b * per + i]);
        }
        return new Dictionary<string, Tensor>
        {
            ["sample"] = Tensor.FromArray(xt, Batch, 4, Size, Size),
            ["timestep"] = Tensor.FromArray(t, Batch),
            ["encoder_hidden_states"] = Tensor.FromArray(text, Batch, 77, 32),
            [TrainingGraph.TargetInput] = Tensor.FromArray(noise, Batch, 4, Size, Size),
        };
    }

    /// <summary>Trains and returns (loss before, loss after, final LoRA weights).</summary>
    private static (double before, double after, List<float[]> weights) Train(ulong seed)
    {
        var g = OnnxImporter.Load(Fixtures.SdTiny("unet/model.onnx"));
        GraphPasses.Prepare(g, new Dictionary<string, int[]>
        {
            ["sample"] = new[] { Batch, 4, Size, Size }, ["timestep"] = new[] { Batch }, ["encoder_hidden_states"] = new[] { Batch, 77, 32 },
        }, fuse: true);
        var targets = LoraTargetSelector.Select(GraphLora.Targets(g, LoraComponents.UNet), new[] { "kohya" });
        var attached = GraphLora.Attach(g, GraphLora.Initialize(targets, rank: 4, alpha: 4, seed));
        var tg = TrainingGraph.Build(g, attached.SelectMany(a => new[] { a.Down, a.Up }).ToList());
        using var session = new TrainingSession(tg);
        var grads = tg.Parameters.ToDictionary(p => p, p => new float[p.Value.Numel]);
        var optimizer = new AdamW(new[]
        {
            new ParameterGroup("lora", tg.Parameters.Select(p => new OptimizerParameter(p.Name, p.Value.Constant!.Memory<float>(), grads[p])).ToList(), 1e-2),
        });
        var batch = FixedBatch();
        double before = session.Run(batch, seed, 0).Loss;
        for (int step = 0; step < Steps; step++)
        {
            session.Run(batch, seed, step);
            foreach (var p in tg.Parameters) session.Gradient(p).ReadOnlySpan<float>().CopyTo(grads[p]);
            optimizer.Step();
        }
        double after = session.Run(batch, seed, Steps).Loss;
        return (before, after, tg.Parameters.Select(p => p.Value.Constant!.ToFloat32Array()).ToList());
    }

    [Fact]
    public void RankFourLoraOverfitsOneBatchReproducibly()
    {
        var a = Train(seed: 5);
        _out.WriteLine($"fixed-set loss {a.before:F5} -> {a.after:F5} ({a.before / a.after:F1}x)");
        Assert.True(a.before / a.after >= 5, $"loss fell only {a.before / a.after:F2}x ({a.before:F4} -> {a.after:F4})");
        var b = Train(seed: 5);
        Assert.Equal(a.weights.Count, b.weights.Count);
        for (int i = 0; i < a.weights.Count; i++)
            Assert.True(a.weights[i].AsSpan().SequenceEqual(b.weights[i]), $"parameter {i} differs between two runs with the same seed");
    }
}
