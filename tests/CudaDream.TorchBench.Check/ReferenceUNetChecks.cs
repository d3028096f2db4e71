using CudaDream.Engine.Formats;
using CudaDream.Engine.Tensors;
using CudaDream.TestSupport;
using Xunit;

namespace CudaDream.TorchBench.Check;

/// <summary>The TorchSharp UNet against the sd-tiny fixture's diffusers 0.21.4 / PyTorch 1.13.1 references.</summary>
public sealed class ReferenceUNetChecks
{
    [Fact]
    public void ForwardReproducesTheDiffusersReference()
    {
        using var unet = ReferenceUNet.Load(Fixtures.SdTiny());
        var result = ReferenceCheck.VerifyForward(unet, Fixtures.SdTiny("refs/unet.safetensors"));
        Assert.True(result.Passed, $"max|out - ref| = {result.MaxAbsError:E3}, {result.RelativeError:E3} of max|ref| {result.MaxAbsReference}");
        Assert.InRange(result.RelativeError, 0, ReferenceCheck.ForwardTolerance);
    }

    [Fact]
    public void EveryParameterOfTheFixtureIsLoaded()
    {
        using var unet = ReferenceUNet.Load(Fixtures.SdTiny());
        var parameters = unet.Model.named_parameters().ToList();
        // The fixture README's count for this UNet, and its 494 state-dict keys (refs/checkpoint_keys.json).
        Assert.Equal(2_164_452, parameters.Sum(p => p.parameter.numel()));
        Assert.Equal(494, parameters.Count);
        Assert.Contains(parameters, p => p.name == "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0.bias");
        Assert.All(parameters, p => Assert.False(p.parameter.requires_grad, $"{p.name} should be frozen"));
    }

    [Fact]
    public void AnOutputThatDiffersFromTheReferenceFailsTheCheck()
    {
        using var dir = Fixtures.TempDir();
        var changed = WithChangedOutput(dir, relativeChange: 1e-3);
        using var unet = ReferenceUNet.Load(Fixtures.SdTiny());
        var result = ReferenceCheck.VerifyForward(unet, changed);
        Assert.False(result.Passed);
        Assert.InRange(result.RelativeError, 5e-4, 2e-3);
    }

    /// <summary>A copy of refs/unet.safetensors whose out_sample has one element moved by relativeChange · max|out_sample|.</summary>
    internal static string WithChangedOutput(TempDir dir, double relativeChange)
    {
        var tensors = SafetensorsFile.ReadAll(Fixtures.SdTiny("refs/unet.safetensors"));
        var output = tensors["out_sample"].ToFloat32Array();
        float scale = output.Max(MathF.Abs);
        output[17] += (float)(relativeChange * scale);
        tensors["out_sample"] = Tensor.FromArray(output, tensors["out_sample"].Shape);
        var path = dir.File("unet_changed.safetensors");
        SafetensorsWriter.Write(path, tensors);
        return path;
    }
}
