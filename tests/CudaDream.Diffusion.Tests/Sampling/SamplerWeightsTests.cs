using CudaDream.Diffusion.Models.Export;
using CudaDream.Diffusion.Models.Import;
using CudaDream.Diffusion.Sampling;
using CudaDream.Engine;
using CudaDream.Engine.Formats;
using CudaDream.Engine.Tensors;
using CudaDream.TestSupport;
using Xunit;

namespace CudaDream.Diffusion.Tests.Sampling;

/// <summary>Replacement weights (a selected-layer run's tuned tensors) applied at sampling time.</summary>
public class SamplerWeightsTests
{
    /// <summary>
    /// Sampling with replaced weights in memory equals sampling the model exported with those weights written in
    /// (`cudadream export --weights`), on both engines, with a LoRA merged on top.
    /// </summary>
    [Theory]
    [InlineData(SamplerEngine.Ort)]
    [InlineData(SamplerEngine.CudaDream)]
    public void ReplacedWeightsEqualAnExportWithThem(SamplerEngine engine)
    {
        using var dir = Fixtures.TempDir();
        var model = dir.File("model");
        CheckpointImporter.Import(Fixtures.SdTiny("checkpoint.safetensors"), model, new ImportOptions { TokenizerDir = Fixtures.SdTiny("tokenizer"), ConfigDir = Fixtures.SdTiny("configs") });
        // CudaDream's graphs name weights by state-dict key and store them in its layout.
        var stored = SafetensorsFile.ReadAll(Fixtures.SdTiny("checkpoint.safetensors"));
        Tensor Scaled(string ldmKey, float by) => Tensor.FromArray(stored[ldmKey].ToFloat32Array().Select(v => v * by).ToArray(), stored[ldmKey].Shape);
        var tuned = new Dictionary<string, Tensor>
        {
            ["down_blocks.0.resnets.0.norm1.weight"] = Scaled("model.diffusion_model.input_blocks.1.0.in_layers.0.weight", 1.5f),
            ["down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"] = Scaled("model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight", -2f),
        };
        SafetensorsWriter.Write(dir.File("tuned.safetensors"), tuned.ToDictionary(kv => "unet." + kv.Key, kv => kv.Value));
        var exported = dir.File("exported");
        var lora = Fixtures.SdTiny("refs/lora_kohya.safetensors");
        ModelExporter.Export(model, exported, new ExportOptions { Format = ExportFormat.Onnx, WeightFiles = new[] { dir.File("tuned.safetensors") }, Loras = new[] { new LoraSpec(lora, 0.7f) } });

        var request = new GenerationRequest { Prompt = "a tiled pattern", Steps = 3, Seed = 5, Width = 64, Height = 64, Scheduler = "euler" };
        var loras = new[] { new LoraSource.File(lora, 0.7f) };
        using var replaced = Sampler.Create(model, new SamplerOptions { Engine = engine, Loras = loras, Weights = new Dictionary<string, IReadOnlyDictionary<string, Tensor>> { ["unet"] = tuned } });
        using var reference = Sampler.Create(exported, new SamplerOptions { Engine = engine });
        using var untouched = Sampler.Create(model, new SamplerOptions { Engine = engine, Loras = loras });
        var expected = reference.Generate(request).FinalLatents;
        TensorAssert.Close(expected, replaced.Generate(request).FinalLatents, 1e-5, "replaced in memory vs exported");
        Assert.True(TensorAssert.RelativeMaxError(expected, untouched.Generate(request).FinalLatents) > 1e-3, "the replaced weights should change the samples");
    }

    [Fact]
    public void AWeightThatDoesNotFitIsRefused()
    {
        var bad = new Dictionary<string, IReadOnlyDictionary<string, Tensor>> { ["unet"] = new Dictionary<string, Tensor> { ["no.such.weight"] = Tensor.Zeros(DType.F32, 3) } };
        var e = Assert.Throws<CudaDreamException>(() => Sampler.Create(Fixtures.SdTiny(), new SamplerOptions { Weights = bad }));
        Assert.Contains("'no.such.weight'", e.Message);
    }
}
