using CudaDream.Engine.Formats;
using CudaDream.TestSupport;
using Xunit;

namespace CudaDream.TorchBench.Check;

/// <summary>The LoRA training step against refs/unet_lora_grad.safetensors (diffusers' LoRALinearLayer, rank 4, alpha 4, MSE loss).</summary>
public sealed class LoraStepChecks
{
    /// <summary>
    /// Per gradient tensor, max|g − ref| ≤ 1e-4 · max|ref|. The reference's own float32 rounding, measured by its
    /// generator as fp64 against fp32, is up to 4.8e-6 of scale (lora_down) and 3.3e-6 (lora_up); this program evaluates
    /// in another order (scaled_dot_product_attention instead of softmax(QKᵀ)·V, libtorch 2.10's kernels instead of
    /// 1.13's, other thread counts), which costs about as much (5.7e-6 worst seen on the 2-core VM). 1e-4 is 20× that and
    /// still far below what a wrong module, scale, transposition or a missing branch gives (a sizeable part of scale).
    /// </summary>
    private const double GradientTolerance = 1e-4;

    private static readonly string Reference = Fixtures.SdTiny("refs/unet_lora_grad.safetensors");

    [Fact]
    public void TheAttentionPresetPicksTheReferencesModules()
    {
        using var unet = ReferenceUNet.Load(Fixtures.SdTiny());
        var picked = LoraStep.AttentionAdapters(unet, 4, 4, 1).Select(a => a.ModulePath).Order(StringComparer.Ordinal).ToList();
        using var file = SafetensorsFile.Open(Reference);
        var inReference = file.Names.Where(n => n.EndsWith(".lora_down.weight", StringComparison.Ordinal))
            .Select(n => n[..^".lora_down.weight".Length]).Order(StringComparer.Ordinal).ToList();
        Assert.Equal(88, picked.Count); // to_q, to_k, to_v, to_out.0 of attn1 and attn2 in 11 transformer blocks
        Assert.Equal(inReference, picked);
    }

    [Fact]
    public void LoraGradientsMatchTheDiffusersReference()
    {
        var check = LoraStep.CheckGradients(Fixtures.SdTiny(), Reference);
        Assert.Equal(1 + 88 * 2, check.Gradients.Count); // sample.grad and every adapter's down and up
        Assert.InRange(Math.Abs(check.Loss - check.ReferenceLoss), 0, 1e-6 * check.ReferenceLoss);
        var worst = check.Gradients.MaxBy(g => g.RelativeError)!;
        Assert.True(worst.RelativeError <= GradientTolerance,
            $"{worst.Name}: max|g - ref| {worst.MaxAbsError:E3} = {worst.RelativeError:E3} of max|ref| {worst.MaxAbsReference:E3}");
        Assert.All(check.Gradients, g => Assert.True(g.MaxAbsReference > 0, $"{g.Name}: the reference gradient is zero, so it checks nothing"));
    }
}
