using CudaDream.Engine.Formats;
using CudaDream.Engine.Randomness;
using CudaDream.Engine.Tensors;
using CudaDream.Engine.Training;
using CudaDream.TestSupport;
using Xunit;

namespace CudaDream.Engine.Tests.Training;

public class GraphGradientRegressionTests
{
    private static Tensor Random(ulong seed, float scale, params int[] shape)
    {
        var d = new float[Shapes.Numel(shape)];
        CounterRng.FillNormal(d, seed, 0, RandomPurpose.Noise);
        return Tensor.FromArray(d.Select(v => v * scale).ToArray(), shape);
    }

    /// <summary>
    /// A kohya LoRA file holds both networks' adapters (lora_unet_*, lora_te_*): `graph grad` on the text encoder uses
    /// its lora_te_ keys and leaves the UNet's alone (it refused the file), with the same gradients as a text-only file.
    /// </summary>
    [Fact]
    public void TextEncoderGradientIgnoresTheUNetsAdaptersInTheSameFile()
    {
        using var dir = Fixtures.TempDir();
        var text = new Dictionary<string, Tensor>
        {
            ["lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight"] = Random(1, 0.25f, 4, 32),
            ["lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight"] = Random(2, 0.05f, 32, 4),
            ["lora_te_text_model_encoder_layers_0_self_attn_q_proj.alpha"] = Tensor.FromArray(new[] { 4f }, Array.Empty<int>()),
        };
        var both = new Dictionary<string, Tensor>(SafetensorsFile.ReadAll(Fixtures.SdTiny("refs/lora_kohya.safetensors")));
        foreach (var (k, v) in text) both[k] = v;
        SafetensorsWriter.Write(dir.File("text.safetensors"), text);
        SafetensorsWriter.Write(dir.File("both.safetensors"), both);

        var refs = SafetensorsFile.ReadAll(Fixtures.SdTiny("refs/text_encoder.safetensors"));
        var tensors = new Dictionary<string, Tensor> { ["input_ids"] = refs["input_ids"], ["target"] = Random(3, 1, 2, 77, 32) };
        Dictionary<string, Tensor> Run(string lora) => GraphGradient.Run(new GraphGradientRequest
        {
            Model = Fixtures.SdTiny("text_encoder/model.onnx"), Tensors = tensors, Target = "target", Lora = dir.File(lora),
        });
        var expected = Run("text.safetensors");
        var got = Run("both.safetensors");
        Assert.Equal(expected.Keys.OrderBy(k => k), got.Keys.OrderBy(k => k));
        Assert.Contains("text_model.encoder.layers.0.self_attn.q_proj.lora_up.weight.grad", got.Keys);
        foreach (var (k, t) in expected) Assert.True(t.Data.Span.SequenceEqual(got[k].Data.Span), $"{k} differs");
    }
}
