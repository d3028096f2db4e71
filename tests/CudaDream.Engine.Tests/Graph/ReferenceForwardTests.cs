using CudaDream.Engine.Formats;
using CudaDream.Engine.Tensors;
using CudaDream.TestSupport;
using Xunit;

namespace CudaDream.Engine.Tests.Graph;

/// <summary>The CPU engine reproduces the PyTorch reference outputs recorded with the sd-tiny exports (DESIGN.md: ≤ 1e-4 · max|ref|).</summary>
public class ReferenceForwardTests
{
    private const double Tolerance = 1e-4;

    private static Dictionary<string, int[]> ShapesOf(Dictionary<string, Tensor> refs, params string[] inputs) =>
        inputs.ToDictionary(i => i, i => refs[i].Shape);

    private static Dictionary<string, Tensor> Run(string model, Dictionary<string, Tensor> refs, bool fuse, string[] inputs, string[]? extra = null)
    {
        using var s = GraphSession.Create(Fixtures.SdTiny(model), ShapesOf(refs, inputs), new GraphSessionOptions { Fuse = fuse, ExtraOutputs = extra ?? Array.Empty<string>() });
        return s.Run(refs);
    }

    [Theory]
    [InlineData("unet/model.onnx", true)]
    [InlineData("unet/model.onnx", false)]
    [InlineData("unet_opset17/model.onnx", true)]
    public void UNetMatchesPyTorch(string model, bool fuse)
    {
        var refs = SafetensorsFile.ReadAll(Fixtures.SdTiny("refs/unet.safetensors"));
        var o = Run(model, refs, fuse, new[] { "sample", "timestep", "encoder_hidden_states" });
        TensorAssert.Close(refs["out_sample"], o["out_sample"], Tolerance, $"{model} fuse={fuse}");
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void TextEncoderMatchesPyTorch(bool fuse)
    {
        var refs = SafetensorsFile.ReadAll(Fixtures.SdTiny("refs/text_encoder.safetensors"));
        var o = Run("text_encoder/model.onnx", refs, fuse, new[] { "input_ids" });
        TensorAssert.Close(refs["last_hidden_state"], o["last_hidden_state"], Tolerance, "last_hidden_state");
        TensorAssert.Close(refs["pooler_output"], o["pooler_output"], Tolerance, "pooler_output");
    }

    [Fact]
    public void VaeDecoderMatchesPyTorch()
    {
        var refs = SafetensorsFile.ReadAll(Fixtures.SdTiny("refs/vae_decoder.safetensors"));
        var o = Run("vae_decoder/model.onnx", refs, true, new[] { "latent_sample" });
        TensorAssert.Close(refs["sample"], o["sample"], Tolerance, "sample");
    }

    /// <summary>moments (quant_conv output), mean and std are deterministic; latent_sample uses the engine's own noise.</summary>
    [Fact]
    public void VaeEncoderMomentsMatchPyTorch()
    {
        var refs = SafetensorsFile.ReadAll(Fixtures.SdTiny("refs/vae_encoder.safetensors"));
        var o = Run("vae_encoder/model.onnx", refs, true, new[] { "sample" }, new[] { "/quant_conv/Conv_output_0", "/Slice_output_0", "/Exp_output_0" });
        TensorAssert.Close(refs["moments"], o["/quant_conv/Conv_output_0"], Tolerance, "moments");
        TensorAssert.Close(refs["mean"], o["/Slice_output_0"], Tolerance, "mean");
        TensorAssert.Close(refs["std"], o["/Exp_output_0"], Tolerance, "std");
        // (latent − mean) / std is the graph's RandomNormalLike draw: standard normal.
        var lat = o["latent_sample"].ToFloat32Array();
        var mean = refs["mean"].ToFloat32Array();
        var std = refs["std"].ToFloat32Array();
        var z = lat.Select((v, i) => (v - mean[i]) / std[i]).ToArray();
        double m = z.Average(), var = z.Select(v => (v - m) * (v - m)).Average();
        Assert.InRange(m, -0.15, 0.15);
        Assert.InRange(var, 0.8, 1.2);
    }
}
