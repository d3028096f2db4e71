using CudaDream.Diffusion.Models;
using CudaDream.Diffusion.Models.Builder;
using CudaDream.Diffusion.Pretraining;
using CudaDream.Engine;
using CudaDream.Engine.Tensors;
using CudaDream.TestSupport;
using Xunit;

namespace CudaDream.Diffusion.Tests.Pretraining;

/// <summary>
/// The autoencoder graph pretrain-tiny trains is the model's own two halves joined at the posterior mean: its output equals the
/// decoder graph run on the encoder graph's mean (both checked against diffusers elsewhere), with the same weights.
/// </summary>
public class AutoencoderGraphTests
{
    [Fact]
    public void The_autoencoder_is_the_decoder_of_the_encoders_posterior_mean()
    {
        var config = TinyPretraining.Config(600, 64).Vae;
        var weights = RandomWeights.For(TinyPretraining.Config(600, 64), 3).Vae;
        using var dir = Fixtures.TempDir();
        VaeGraphs.BuildAutoencoder(config, new DictionaryWeights(weights)).Save(dir.File("ae.onnx"));
        VaeGraphs.BuildEncoder(config, new DictionaryWeights(weights)).Save(dir.File("enc.onnx"));
        VaeGraphs.BuildDecoder(config, new DictionaryWeights(weights)).Save(dir.File("dec.onnx"));
        var x = Diffusion.Images.ImageTensors.ToChw(ShapeScenes.Render(ShapeScenes.Draw(1, 0, 64), 64)).Reshape(1, 3, 64, 64);

        using var ae = GraphSession.Create(dir.File("ae.onnx"), new Dictionary<string, int[]> { ["sample"] = [1, 3, 64, 64] });
        var joined = ae.Run(new Dictionary<string, Tensor> { ["sample"] = x })["reconstruction"].ToFloat32Array();

        using var enc = GraphSession.Create(dir.File("enc.onnx"), new Dictionary<string, int[]> { ["sample"] = [1, 3, 64, 64] });
        var moments = enc.Run(new Dictionary<string, Tensor> { ["sample"] = x })["moments"];
        var mean = Tensor.FromArray(moments.ToFloat32Array().AsSpan(0, 4 * 8 * 8).ToArray(), 1, 4, 8, 8);
        using var dec = GraphSession.Create(dir.File("dec.onnx"), new Dictionary<string, int[]> { ["latent_sample"] = [1, 4, 8, 8] });
        var separate = dec.Run(new Dictionary<string, Tensor> { ["latent_sample"] = mean })["sample"].ToFloat32Array();

        Assert.Equal(separate.Length, joined.Length);
        double max = separate.Max(Math.Abs);
        for (int i = 0; i < joined.Length; i++) Assert.True(Math.Abs(joined[i] - separate[i]) <= 1e-5 * max, $"element {i}: {joined[i]} vs {separate[i]}");
    }
}
