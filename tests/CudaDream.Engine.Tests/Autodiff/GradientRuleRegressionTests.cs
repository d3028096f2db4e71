using CudaDream.Engine.Formats;
using CudaDream.Engine.Randomness;
using CudaDream.Engine.Tensors;
using CudaDream.Engine.Training;
using CudaDream.TestSupport;
using Xunit;

namespace CudaDream.Engine.Tests.Autodiff;

/// <summary>
/// Rules found missing by differentiating the VAE encoder (`graph grad`, `inspect --train`): torch's export clamps the
/// log-variance (Clip) and both exports draw the posterior sample in the graph (RandomNormalLike).
/// </summary>
public class GradientRuleRegressionTests
{
    [Fact]
    public void ClipPassesTheGradientInsideItsRange()
    {
        var c = new GradCheck();
        // N(0, 2²) values: most fall outside [-0.5, 0.7], so both the passed and the stopped gradient are sampled.
        var x = c.Input(new[] { 4, 8 }, scale: 2);
        c.Check(c.Node1("Clip", x, c.Const(new[] { -0.5 }, Array.Empty<int>()), c.Const(new[] { 0.7 }, Array.Empty<int>())));
    }

    [Fact]
    public void RandomNormalLikeIsConstantTowardItsInput()
    {
        // y = ε(x) · x with ε drawn from x's shape: dy/dx = ε, as central differences of the seeded draw see it.
        var c = new GradCheck();
        var x = c.Input(new[] { 3, 5 });
        c.Check(c.Node1("Mul", c.Node1("RandomNormalLike", x), x));
    }

    /// <summary>
    /// `graph grad` through the torch-exported VAE encoder (Clip and RandomNormalLike on the way to latent_sample): the
    /// input gradient of the fused graph equals the unfused graph's (other rules for every norm and attention).
    /// </summary>
    [Fact]
    public void VaeEncoderDifferentiates()
    {
        var sample = new float[2 * 3 * 24 * 40];
        CounterRng.FillNormal(sample, 3, 0, RandomPurpose.Noise);
        var target = new float[2 * 4 * 3 * 5];
        CounterRng.FillNormal(target, 4, 0, RandomPurpose.Noise);
        var tensors = new Dictionary<string, Tensor>
        {
            ["sample"] = Tensor.FromArray(sample.Select(v => Math.Clamp(v / 3, -1f, 1f)).ToArray(), 2, 3, 24, 40),
            ["target"] = Tensor.FromArray(target, 2, 4, 3, 5),
        };
        Dictionary<string, Tensor> Run(bool fuse) => GraphGradient.Run(new GraphGradientRequest
        {
            Model = Fixtures.SdTiny("vae_encoder/model.onnx"), Tensors = tensors, Target = "target", Wrt = new[] { "inputs" }, Fuse = fuse,
        });
        var fused = Run(true);
        var unfused = Run(false);
        var grad = fused["sample.grad"].ToFloat32Array();
        Assert.All(grad, g => Assert.True(float.IsFinite(g)));
        Assert.Contains(grad, g => g != 0);
        TensorAssert.Close(unfused["sample.grad"], fused["sample.grad"], 1e-4, "sample.grad fused vs unfused");
    }
}
