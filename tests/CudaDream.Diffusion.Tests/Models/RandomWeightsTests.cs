using CudaDream.Diffusion.Models;
using CudaDream.Diffusion.Models.Builder;
using CudaDream.Diffusion.Models.Import;
using CudaDream.Engine;
using CudaDream.Engine.Tensors;
using CudaDream.TestSupport;
using Xunit;

namespace CudaDream.Diffusion.Tests.Models;

/// <summary>bench --sd15's model without a checkpoint: every tensor of the checkpoint table, initialised at a fresh network's scale.</summary>
public class RandomWeightsTests
{
    [Fact]
    public void Every_tensor_of_the_table_gets_its_shape_and_its_initial_scale()
    {
        var config = SdModelConfig.FromFolder(Fixtures.SdTiny("configs"));
        var w = RandomWeights.For(config, seed: 3);
        var table = CheckpointNames.Table(config);
        Assert.Equal(table.Count, w.UNet.Count + w.Vae.Count + w.TextEncoder.Count);
        foreach (var key in table) Assert.Equal(key.Shape, w.Of(key.Component)[key.Diffusers].Shape);

        var conv = w.UNet["conv_in.weight"].ToFloat32Array(); // [C, 4, 3, 3]: fan-in 36
        double std = Math.Sqrt(conv.Select(x => (double)x * x).Average());
        Assert.InRange(std, 0.7 / 6, 1.3 / 6);
        Assert.All(w.UNet["conv_in.bias"].ToFloat32Array(), x => Assert.Equal(0f, x));
        Assert.All(w.UNet.Where(kv => kv.Key.EndsWith("norm1.weight", StringComparison.Ordinal)).SelectMany(kv => kv.Value.ToFloat32Array()), x => Assert.Equal(1f, x));
        var tokens = w.TextEncoder.Single(kv => kv.Key.EndsWith("token_embedding.weight", StringComparison.Ordinal)).Value.ToFloat32Array();
        Assert.InRange(Math.Sqrt(tokens.Select(x => (double)x * x).Average()), 0.015, 0.025);

        // Seeded: the same seed gives the same model, another seed another.
        Assert.True(w.UNet["conv_in.weight"].Data.Span.SequenceEqual(RandomWeights.For(config, 3).UNet["conv_in.weight"].Data.Span));
        Assert.False(w.UNet["conv_in.weight"].Data.Span.SequenceEqual(RandomWeights.For(config, 4).UNet["conv_in.weight"].Data.Span));
    }

    [Fact]
    public void A_random_model_runs_with_activations_of_a_sane_size()
    {
        var config = SdModelConfig.FromFolder(Fixtures.SdTiny("configs"));
        using var dir = Fixtures.TempDir();
        var folder = dir.File("random");
        OnnxModelFolder.Write(folder, new OnnxModelFolder.Contents(config, RandomWeights.For(config, 1), DType.F32, Fixtures.SdTiny("tokenizer"), OnnxModelFolder.Sd15SchedulerConfig));
        var model = ModelFolder.Open(folder);
        var ehs = model.UNetGraph.Input("encoder_hidden_states")!.Dims[^1];
        var shapes = new Dictionary<string, int[]> { ["sample"] = [1, model.LatentChannels, 8, 8], ["timestep"] = [1], ["encoder_hidden_states"] = [1, 77, ehs] };
        using var unet = GraphSession.Create(model.ModelPath(ModelFolder.UNet), shapes);
        var inputs = new Dictionary<string, Tensor>
        {
            ["sample"] = Tensor.FromArray(Enumerable.Range(0, model.LatentChannels * 64).Select(i => MathF.Sin(i)).ToArray(), shapes["sample"]),
            ["timestep"] = Tensor.FromArray([500f], 1),
            ["encoder_hidden_states"] = Tensor.FromArray(Enumerable.Range(0, 77 * ehs).Select(i => MathF.Cos(i)).ToArray(), shapes["encoder_hidden_states"]),
        };
        var output = unet.Run(inputs).Values.Single().ToFloat32Array();
        double rms = Math.Sqrt(output.Select(x => (double)x * x).Average());
        Assert.All(output, x => Assert.True(float.IsFinite(x)));
        Assert.InRange(rms, 1e-3, 1e2);
    }
}
