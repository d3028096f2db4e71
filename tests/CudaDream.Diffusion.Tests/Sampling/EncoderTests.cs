using System.Text.Json.Nodes;
using CudaDream.Diffusion.Sampling;
using CudaDream.Engine.Formats;
using CudaDream.Engine.Randomness;
using CudaDream.Engine.Tensors;
using CudaDream.TestSupport;
using Xunit;
using Xunit.Abstractions;

namespace CudaDream.Diffusion.Tests.Sampling;

/// <summary>The sampler's text and image encoders against the transformers/diffusers references of sd-tiny.</summary>
public sealed class EncoderTests(ITestOutputHelper output)
{
    private static readonly Dictionary<string, Tensor> Text = SafetensorsFile.ReadAll(Fixtures.SdTiny("refs/text_encoder.safetensors"));
    private static readonly Dictionary<string, Tensor> TextActs = SafetensorsFile.ReadAll(Fixtures.SdTiny("refs/text_encoder_acts.safetensors"));
    private static readonly Dictionary<string, Tensor> Vae = SafetensorsFile.ReadAll(Fixtures.SdTiny("refs/vae_encoder.safetensors"));

    [Theory]
    [InlineData(SamplerEngine.Ort)]
    [InlineData(SamplerEngine.CudaDream)]
    public void Prompt_embeddings_are_the_text_encoders_last_hidden_state(SamplerEngine engine)
    {
        using var sampler = Sampler.Create(Fixtures.SdTiny(), new SamplerOptions { Engine = engine });
        var hidden = sampler.EncodeTokens(Text["input_ids"]);
        TensorAssert.Close(Text["last_hidden_state"], hidden, 1e-5, "last_hidden_state");
    }

    /// <summary>
    /// CLIP skip k = final_layer_norm(hidden_states[−k]) as AUTOMATIC1111 computes it. The expected values apply the
    /// final layer norm (weights from the graph, ε from the transformers config) to transformers' own layer outputs;
    /// that oracle is first checked on the last layer against transformers' final_layer_norm output.
    /// </summary>
    [Theory]
    [InlineData(SamplerEngine.Ort)]
    [InlineData(SamplerEngine.CudaDream)]
    public void Clip_skip_takes_an_earlier_layer_through_the_final_layer_norm(SamplerEngine engine)
    {
        using var model = OnnxModel.Load(Fixtures.SdTiny("text_encoder/model.onnx"));
        var weights = model.Initializers;
        var gamma = weights["text_model.final_layer_norm.weight"].ToFloat32Array();
        var beta = weights["text_model.final_layer_norm.bias"].ToFloat32Array();
        double eps = JsonNode.Parse(File.ReadAllText(Fixtures.SdTiny("configs/text_encoder_config.json")))!["layer_norm_eps"]!.GetValue<double>();
        Tensor LayerNorm(Tensor x) => ReferenceLayerNorm(x, gamma, beta, eps);
        int layers = TextActs.Keys.Count(k => k.StartsWith("act.text_model.encoder.layers.", StringComparison.Ordinal));
        Assert.Equal(3, layers);
        TensorAssert.Close(TextActs["act.text_model.final_layer_norm"], LayerNorm(TextActs[$"act.text_model.encoder.layers.{layers - 1}"]), 1e-5, "layer-norm oracle");

        using var sampler = Sampler.Create(Fixtures.SdTiny(), new SamplerOptions { Engine = engine, KeepSessionsLoaded = true });
        for (int skip = 2; skip <= layers; skip++)
        {
            var expected = LayerNorm(TextActs[$"act.text_model.encoder.layers.{layers - skip}"]);
            var actual = sampler.EncodeTokens(Text["input_ids"], skip);
            double err = TensorAssert.RelativeMaxError(actual, expected);
            output.WriteLine($"{engine} clip skip {skip}: {err:E2}");
            Assert.True(err <= 1e-5, $"clip skip {skip}: {err:E2}");
        }
        // And back to the whole encoder.
        TensorAssert.Close(Text["last_hidden_state"], sampler.EncodeTokens(Text["input_ids"], 1), 1e-5, "clip skip 1 after 3");
        Assert.Contains("use 1..3", Assert.Throws<Engine.CudaDreamException>(() => sampler.EncodeTokens(Text["input_ids"], 4)).Message);
    }

    /// <summary>The exported encoder draws its own noise (RandomNormalLike); the sampler reads the posterior's
    /// parameters instead and draws the noise itself, so a seed fixes the img2img start.</summary>
    [Theory]
    [InlineData(SamplerEngine.Ort)]
    [InlineData(SamplerEngine.CudaDream)]
    public void Vae_encoder_gives_diffusers_posterior_and_sample(SamplerEngine engine)
    {
        using var sampler = Sampler.Create(Fixtures.SdTiny(), new SamplerOptions { Engine = engine });
        var moments = sampler.EncodeMoments(Vae["sample"]);
        TensorAssert.Close(Vae["moments"], moments, 1e-5, "moments");
        var latent = LatentCodec.SampleLatents(moments, 1f, RecordedNoise.FromStacked(Vae["noise"]));
        TensorAssert.Close(Vae["latent_sample"], latent, 1e-5, "latent_sample = mean + std·noise");
    }

    /// <summary>Engines built on a plan that edits nothing (as the training cache builds them) still read the moments, not the exporter's random sample.</summary>
    [Fact]
    public void Engines_always_encode_to_moments()
    {
        var folder = CudaDream.Diffusion.Models.ModelFolder.Open(Fixtures.SdTiny());
        var plan = new CudaDream.Diffusion.Sampling.Engines.PipelinePlan(folder, (_, _) => CudaDream.Diffusion.Sampling.Engines.NetworkEdits.None);
        using (var engine = new CudaDream.Diffusion.Sampling.Engines.GraphPipelineEngine(plan, new CudaDream.Diffusion.Sampling.Engines.CpuGraphBackend()))
            TensorAssert.Close(Vae["moments"], engine.EncodeMoments(Vae["sample"]), 1e-5, "engine moments");
        using (var engine = new CudaDream.Diffusion.Sampling.Engines.OrtPipelineEngine(plan, cudaDevice: null))
            TensorAssert.Close(Vae["moments"], engine.EncodeMoments(Vae["sample"]), 1e-5, "ORT moments");
    }

    private static Tensor ReferenceLayerNorm(Tensor x, float[] gamma, float[] beta, double eps)
    {
        var v = x.ToFloat32Array();
        int d = gamma.Length;
        var y = new float[v.Length];
        for (int row = 0; row < v.Length / d; row++)
        {
            var r = v.AsSpan(row * d, d);
            double mean = 0, var = 0;
            foreach (var a in r) mean += a;
            mean /= d;
            foreach (var a in r) var += (a - mean) * (a - mean);
            var /= d;
            for (int i = 0; i < d; i++) y[row * d + i] = (float)((r[i] - mean) / Math.Sqrt(var + eps) * gamma[i] + beta[i]);
        }
        return Tensor.FromArray(y, x.Shape);
    }
}
