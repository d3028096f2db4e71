using CudaDream.Engine.Backends.Cpu;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Randomness;
using CudaDream.Engine.Tensors;
using CudaDream.Engine.Training;
using Xunit;

namespace CudaDream.Engine.Tests.Training;

/// <summary>
/// The training graph's loss mask (masked loss): with a mask that zeroes the right half of the latent grid, the loss
/// equals the weighted MSE over the left half computed here directly, the gradients match central finite differences,
/// and nothing of the masked half reaches a gradient — exactly 0 toward those inputs of a pointwise model, and
/// bit-identical parameter gradients of a convolutional model whatever the targets there.
/// </summary>
public class MaskedLossTests
{
    private const int B = 2, C = 3, H = 4, W = 6;
    private static readonly int[] Shape = [B, C, H, W];

    private static double[] Random(int n, ulong seed)
    {
        var f = new float[n];
        CounterRng.FillNormal(f, seed, 0, RandomPurpose.Noise);
        return f.Select(x => (double)x).ToArray();
    }

    private static Value Weight(string name, int[] shape, ulong seed) =>
        new(name, DType.F64, shape) { Constant = Tensor.FromArray(Random((int)Shapes.Numel(shape), seed), shape), IsWeight = true };

    private static Value Add(ComputeGraph g, string op, Attributes? a, params Value[] inputs)
    {
        var y = new Value($"/m/{op}_{g.Nodes.Count}_output_0", DType.F64, null);
        var n = new Node(op, $"/m/{op}_{g.Nodes.Count}", inputs, new[] { y }, a);
        OpRegistry.InferShapes(n);
        g.AddNode(n);
        return y;
    }

    /// <summary>The model: pointwise (y = x·w + b per channel) or a 3×3 convolution (every output reads its neighbours).</summary>
    private static (TrainingSession Session, List<Value> Weights) Build(bool convolution)
    {
        var g = new ComputeGraph { Source = "masked-loss" };
        var x = new Value("sample", DType.F64, Shape);
        g.Inputs.Add(x);
        List<Value> weights;
        Value y;
        if (convolution)
        {
            var w = Weight("conv.weight", [C, C, 3, 3], 5);
            var b = Weight("conv.bias", [C], 6);
            y = Add(g, "Conv", new Attributes().Set("pads", new long[] { 1, 1, 1, 1 }), x, w, b);
            weights = [w, b];
        }
        else
        {
            var w = Weight("scale", [1, C, 1, 1], 5);
            var b = Weight("shift", [1, C, 1, 1], 6);
            y = Add(g, "Add", null, Add(g, "Mul", null, x, w), b);
            weights = [w, b];
        }
        g.Outputs.Add(y);
        var tg = TrainingGraph.Build(g, weights, new TrainingGraphOptions { PerSampleWeights = true, LossMask = true, InputGradients = ["sample"] });
        return (new TrainingSession(tg, CpuContext.Reference), weights);
    }

    /// <summary>√m per element (what the trainer feeds) for a mask that is 1 on the left half and 0 on the right half.</summary>
    private static double[] HalfMask()
    {
        var m = new double[B * C * H * W];
        for (int i = 0; i < m.Length; i++) m[i] = i % W < W / 2 ? 1 : 0;
        return m;
    }

    private static Dictionary<string, Tensor> Feed(double[] x, double[] target, double[] mask, double[] weights) => new()
    {
        ["sample"] = Tensor.FromArray(x, Shape),
        [TrainingGraph.TargetInput] = Tensor.FromArray(target, Shape),
        [TrainingGraph.LossMaskInput] = Tensor.FromArray(mask, Shape),
        [TrainingGraph.WeightsInput] = Tensor.FromArray(weights, B),
    };

    [Fact]
    public void Masked_half_gives_exactly_zero_gradient_and_finite_differences_agree()
    {
        var (session, weights) = Build(convolution: false);
        using var _ = session;
        var x = Random(B * C * H * W, 1);
        var target = Random(B * C * H * W, 2);
        var mask = HalfMask();
        // The weights the trainer feeds for a mean over the masked pixels: w_b·H·W/Σm = w_b·2 here.
        var lossWeights = new[] { 1.0 * 2, 0.5 * 2 };
        var feed = Feed(x, target, mask, lossWeights);
        var result = session.Run(feed);

        // The loss computed directly: (1/B)·Σ_b w_b·mean over the left half of (prediction − target)².
        var scale = weights[0].Constant!.ToFloat64Array();
        var shift = weights[1].Constant!.ToFloat64Array();
        double expected = 0;
        double[] rowWeights = [1.0, 0.5];
        for (int b = 0; b < B; b++)
        {
            double sum = 0;
            int count = 0;
            for (int c = 0; c < C; c++)
                for (int i = 0; i < H * W; i++)
                {
                    if (i % W >= W / 2) continue;
                    int e = (b * C + c) * H * W + i;
                    double d = x[e] * scale[c] + shift[c] - target[e];
                    sum += d * d;
                    count++;
                }
            expected += rowWeights[b] * sum / count;
        }
        expected /= B;
        Assert.Equal(expected, result.Loss, 12);

        // Nothing reaches the masked half: the input gradient is exactly 0 there (and not elsewhere).
        var dx = session.InputGradient("sample").ToFloat64Array();
        for (int e = 0; e < dx.Length; e++)
            if (e % W >= W / 2) Assert.Equal(0.0, dx[e]);
        Assert.Contains(dx.Where((_, e) => e % W < W / 2), v => v != 0);

        // Finite differences of the masked loss toward the parameters and the unmasked inputs.
        var analyticScale = session.Gradient(session.Training.Parameters[0]).ToFloat64Array();
        double Loss() => session.Run(feed).Loss;
        const double h = 1e-6;
        for (int c = 0; c < C; c++)
        {
            var span = weights[0].Constant!.Span<double>();
            double orig = span[c];
            span[c] = orig + h; double lp = Loss();
            span[c] = orig - h; double lm = Loss();
            span[c] = orig;
            Assert.True(Math.Abs((lp - lm) / (2 * h) - analyticScale[c]) <= 1e-6 * (1 + Math.Abs(analyticScale[c])), $"d loss/d scale[{c}]");
        }
        session.Run(feed);
        dx = session.InputGradient("sample").ToFloat64Array();
        foreach (int e in new[] { 0, 7, 13, 3 + W, 4 + W * 2 + H * W * C })
        {
            var xs = (double[])x.Clone();
            xs[e] += h; double lp = session.Run(Feed(xs, target, mask, lossWeights)).Loss;
            xs[e] -= 2 * h; double lm = session.Run(Feed(xs, target, mask, lossWeights)).Loss;
            double numeric = (lp - lm) / (2 * h);
            Assert.True(Math.Abs(numeric - dx[e]) <= 1e-6 * (1 + Math.Abs(numeric)), $"d loss/d x[{e}]: numeric {numeric}, analytic {dx[e]} (masked: {e % W >= W / 2})");
        }
    }

    [Fact]
    public void Targets_under_the_mask_do_not_change_a_convolutions_gradients()
    {
        var (session, _) = Build(convolution: true);
        using var s = session;
        var x = Random(B * C * H * W, 3);
        var target = Random(B * C * H * W, 4);
        var mask = HalfMask();
        double[] weights = [2, 2];
        session.Run(Feed(x, target, mask, weights));
        var before = session.Training.Parameters.Select(p => session.Gradient(p).ToFloat64Array()).ToList();

        var changed = (double[])target.Clone();
        for (int e = 0; e < changed.Length; e++) if (e % W >= W / 2) changed[e] = 1000 + e;
        var result = session.Run(Feed(x, changed, mask, weights));
        var after = session.Training.Parameters.Select(p => session.Gradient(p).ToFloat64Array()).ToList();
        for (int i = 0; i < before.Count; i++) Assert.Equal(before[i], after[i]);
        Assert.True(double.IsFinite(result.Loss));
        // And without the mask the same change does move them (the test would see a leak).
        session.Run(Feed(x, changed, mask.Select(_ => 1.0).ToArray(), weights));
        Assert.NotEqual(before[0], session.Gradient(session.Training.Parameters[0]).ToFloat64Array());
    }
}
