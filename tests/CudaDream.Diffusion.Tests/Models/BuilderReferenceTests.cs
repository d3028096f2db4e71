using CudaDream.Diffusion.Models.Builder;
using CudaDream.Diffusion.Models.Import;
using CudaDream.Engine.Formats;
using CudaDream.Engine.Tensors;
using CudaDream.TestSupport;
using Xunit;
using Xunit.Abstractions;

namespace CudaDream.Diffusion.Tests.Models;

/// <summary>
/// The builder is the same architecture as diffusers/transformers: graphs built from the sd-tiny configs,
/// loaded with the fixture checkpoint's weights and run on ONNX Runtime, reproduce the PyTorch references.
/// </summary>
public sealed class BuilderReferenceTests(ITestOutputHelper output) : IDisposable
{
    private readonly TempDir _dir = Fixtures.TempDir();
    private readonly SafetensorsFile _checkpoint = SafetensorsFile.Open(Fixtures.SdTiny("checkpoint.safetensors"));

    private DiffusersWeights Weights(out SdModelConfig config)
    {
        config = SdModelConfig.FromFolder(Fixtures.SdTiny("configs"));
        return LdmCheckpoint.Read(_checkpoint, config, useEma: false, new List<string>());
    }

    private Dictionary<string, Tensor> Run(BuiltGraph graph, string name, Dictionary<string, Tensor> inputs)
    {
        var path = _dir.File(name + ".onnx");
        graph.Save(path);
        return OrtRunner.Run(path, inputs);
    }

    private void Check(Tensor expected, Tensor actual, string what, double tol = 1e-4)
    {
        output.WriteLine($"{what}: relative max error {TensorAssert.RelativeMaxError(actual, expected):E2}");
        TensorAssert.Close(expected, actual, tol, what);
    }

    [Fact]
    public void TextEncoderMatchesTransformers()
    {
        var w = Weights(out var config);
        var refs = SafetensorsFile.ReadAll(Fixtures.SdTiny("refs/text_encoder.safetensors"));
        var outs = Run(ClipTextGraph.Build(config.TextEncoder, new DictionaryWeights(w.TextEncoder)), "text_encoder",
            new() { ["input_ids"] = refs["input_ids"] });
        Check(refs["last_hidden_state"], outs["last_hidden_state"], "last_hidden_state");
        Check(refs["pooler_output"], outs["pooler_output"], "pooler_output");
    }

    [Fact]
    public void UNetMatchesDiffusers()
    {
        var w = Weights(out var config);
        var refs = SafetensorsFile.ReadAll(Fixtures.SdTiny("refs/unet.safetensors"));
        var outs = Run(UNetGraph.Build(config.UNet, new DictionaryWeights(w.UNet)), "unet", new()
        {
            ["sample"] = refs["sample"], ["timestep"] = refs["timestep"], ["encoder_hidden_states"] = refs["encoder_hidden_states"],
        });
        Check(refs["out_sample"], outs["out_sample"], "out_sample");
    }

    [Fact]
    public void VaeDecoderMatchesDiffusers()
    {
        var w = Weights(out var config);
        var refs = SafetensorsFile.ReadAll(Fixtures.SdTiny("refs/vae_decoder.safetensors"));
        var outs = Run(VaeGraphs.BuildDecoder(config.Vae, new DictionaryWeights(w.Vae)), "vae_decoder",
            new() { ["latent_sample"] = refs["latent_sample"] });
        Check(refs["sample"], outs["sample"], "sample");
    }

    [Fact]
    public void VaeEncoderMomentsMatchDiffusers()
    {
        var w = Weights(out var config);
        var refs = SafetensorsFile.ReadAll(Fixtures.SdTiny("refs/vae_encoder.safetensors"));
        var outs = Run(VaeGraphs.BuildEncoder(config.Vae, new DictionaryWeights(w.Vae)), "vae_encoder",
            new() { ["sample"] = refs["sample"] });
        Check(refs["moments"], outs["moments"], "moments");
        // latent_sample = mean + std·N(0,1) drawn by the graph: the implied noise must look standard normal.
        var latent = outs["latent_sample"].ToFloat32Array();
        var mean = refs["mean"].ToFloat32Array();
        var std = refs["std"].ToFloat32Array();
        var z = latent.Select((v, i) => (v - mean[i]) / std[i]).ToArray();
        double m = z.Average(), s = Math.Sqrt(z.Select(v => (v - m) * (v - m)).Average());
        output.WriteLine($"implied noise mean {m:F3} std {s:F3} over {z.Length}");
        Assert.InRange(m, -0.15, 0.15);
        Assert.InRange(s, 0.85, 1.15);
    }

    public void Dispose()
    {
        _checkpoint.Dispose();
        _dir.Dispose();
    }
}

/// <summary>
/// use_linear_projection changes only where proj_in/proj_out are applied (a linear on [B, HW, C] instead of a
/// 1×1 conv on [B, C, H, W]); with the conv weights viewed as [C, C] the network is the same, so the
/// linear-projection build must reproduce the same PyTorch reference.
/// </summary>
public sealed class LinearProjectionTests(ITestOutputHelper output) : IDisposable
{
    private readonly TempDir _dir = Fixtures.TempDir();

    [Fact]
    public void LinearProjectionUNetReproducesTheConvProjectionReference()
    {
        using var ck = SafetensorsFile.Open(Fixtures.SdTiny("checkpoint.safetensors"));
        var config = SdModelConfig.FromFolder(Fixtures.SdTiny("configs"));
        var w = LdmCheckpoint.Read(ck, config, false, new List<string>());
        var linear = w.UNet.ToDictionary(kv => kv.Key, kv =>
            (kv.Key.Contains(".proj_in.weight") || kv.Key.Contains(".proj_out.weight")) ? kv.Value.Reshape(kv.Value.Shape[0], kv.Value.Shape[1]) : kv.Value);
        var graph = UNetGraph.Build(config.UNet with { UseLinearProjection = true }, new DictionaryWeights(linear));
        Assert.Contains(graph.Initializers, i => i.Name == "down_blocks.0.attentions.0.proj_in.weight" && i.Shape.Length == 2);
        var path = _dir.File("unet.onnx");
        graph.Save(path);
        var refs = SafetensorsFile.ReadAll(Fixtures.SdTiny("refs/unet.safetensors"));
        var o = OrtRunner.Run(path, new() { ["sample"] = refs["sample"], ["timestep"] = refs["timestep"], ["encoder_hidden_states"] = refs["encoder_hidden_states"] });
        output.WriteLine($"linear projection: {TensorAssert.RelativeMaxError(o["out_sample"], refs["out_sample"]):E2}");
        TensorAssert.Close(refs["out_sample"], o["out_sample"], 1e-4, "out_sample");
    }

    public void Dispose() => _dir.Dispose();
}
