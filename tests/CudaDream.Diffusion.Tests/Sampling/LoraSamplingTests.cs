using CudaDream.Diffusion.Sampling;
using CudaDream.Engine;
using CudaDream.Engine.Formats;
using CudaDream.Engine.Tensors;
using CudaDream.TestSupport;
using Xunit;
using Xunit.Abstractions;

namespace CudaDream.Diffusion.Tests.Sampling;

/// <summary>LoRA files at sampling time: several at once, unmatched keys, files for other models.</summary>
public sealed class LoraSamplingTests(ITestOutputHelper output) : IDisposable
{
    private readonly TempDir _dir = Fixtures.TempDir();
    private static readonly string Kohya = Fixtures.SdTiny("refs/lora_kohya.safetensors");

    public void Dispose() => _dir.Dispose();

    /// <summary>Merging is linear in the multipliers: the recorded LoRA twice at 0.4 is the recorded run at 0.8.</summary>
    [Fact]
    public void Two_LoRAs_add_up()
    {
        var copy = _dir.File("copy.safetensors");
        File.Copy(Kohya, copy);
        var reference = PipelineReference.Load("ddim_lora");
        using var sampler = Sampler.Create(Fixtures.SdTiny(), new SamplerOptions
        {
            Engine = SamplerEngine.Ort,
            Loras = [LoraSource.Parse(Kohya + ":0.4"), LoraSource.Parse(copy + ":0.4")],
        });
        var result = sampler.Generate(reference.Request());
        reference.AssertMatches(result, output, "two LoRAs at 0.4");
        var infotext = result.Images[0].Parameters.ToInfotext();
        Assert.Contains("Lora hashes: \"lora_kohya: ", infotext);
        Assert.Contains(", copy: ", infotext);
    }

    /// <summary>
    /// No torch reference covers text-encoder or Gemm (time embedding) LoRAs, so the two engines — which apply the
    /// merged weights by different routes (ONNX Runtime initializer overrides on an edited graph, the engine's
    /// weight constants) — must agree, and the LoRA must change the result.
    /// </summary>
    [Fact]
    public void Text_encoder_and_time_embedding_LoRAs_apply_on_both_engines()
    {
        var path = _dir.File("te.safetensors");
        var rng = new Random(5);
        Tensor Random(params int[] shape) => Tensor.FromArray(Enumerable.Range(0, (int)Shapes.Numel(shape)).Select(_ => (float)(rng.NextDouble() - 0.5) * 0.5f).ToArray(), shape);
        SafetensorsWriter.Write(path, new Dictionary<string, Tensor>
        {
            ["lora_te_text_model_encoder_layers_1_self_attn_v_proj.lora_down.weight"] = Random(2, 32),
            ["lora_te_text_model_encoder_layers_1_self_attn_v_proj.lora_up.weight"] = Random(32, 2),
            ["lora_te_text_model_encoder_layers_2_mlp_fc1.lora_down.weight"] = Random(2, 32),
            ["lora_te_text_model_encoder_layers_2_mlp_fc1.lora_up.weight"] = Random(64, 2),
            ["lora_unet_time_embedding_linear_1.lora_down.weight"] = Random(2, 32),
            ["lora_unet_time_embedding_linear_1.lora_up.weight"] = Random(128, 2),
        });
        var request = new GenerationRequest { Prompt = "a photo of sks dog", Steps = 3, Scheduler = "ddim", Seed = 3, Width = 64, Height = 64 };
        GenerationResult Run(SamplerEngine engine, bool lora)
        {
            using var sampler = Sampler.Create(Fixtures.SdTiny(), new SamplerOptions { Engine = engine, Loras = lora ? [LoraSource.Parse(path)] : [] });
            if (lora) Assert.Equal(3, sampler.LoraModules);
            return sampler.Generate(request);
        }
        var ort = Run(SamplerEngine.Ort, true);
        var engine = Run(SamplerEngine.CudaDream, true);
        var plain = Run(SamplerEngine.Ort, false);
        double agreement = TensorAssert.RelativeMaxError(engine.FinalLatents, ort.FinalLatents);
        double effect = TensorAssert.RelativeMaxError(plain.FinalLatents, ort.FinalLatents);
        output.WriteLine($"engines differ by {agreement:E2}; the LoRA moves the latents by {effect:E2}");
        Assert.True(agreement <= 1e-5, $"engines differ by {agreement:E2}");
        Assert.True(effect > 1e-2, $"the LoRA moved the latents by only {effect:E2}");
    }

    [Fact]
    public void Keys_that_match_no_module_are_listed_in_a_warning()
    {
        var tensors = SafetensorsFile.ReadAll(Kohya);
        tensors["lora_unet_no_such_block_to_q.lora_down.weight"] = Tensor.FromArray(new float[4 * 32], 4, 32);
        tensors["lora_unet_no_such_block_to_q.lora_up.weight"] = Tensor.FromArray(new float[32 * 4], 32, 4);
        var path = _dir.File("extra.safetensors");
        SafetensorsWriter.Write(path, tensors);
        var logged = new List<string>();
        using var sampler = Sampler.Create(Fixtures.SdTiny(), new SamplerOptions { Engine = SamplerEngine.Ort, Loras = [LoraSource.Parse(path)], Log = logged.Add });
        var warning = Assert.Single(sampler.Warnings);
        Assert.Contains("2 keys match no module", warning);
        Assert.Contains("lora_unet_no_such_block_to_q.lora_down.weight", warning);
        Assert.Contains(logged, l => l.StartsWith("warning: ", StringComparison.Ordinal) && l.Contains("no_such_block"));
        Assert.Equal(132, sampler.LoraModules);
    }

    /// <summary>An SD 1.5-sized LoRA (768-wide attention) on sd-tiny (32-wide): refused with the key and both shapes.</summary>
    [Fact]
    public void A_LoRA_for_wider_layers_is_refused()
    {
        var path = _dir.File("sd15.safetensors");
        const string module = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q";
        SafetensorsWriter.Write(path, new Dictionary<string, Tensor>
        {
            [module + ".lora_down.weight"] = Tensor.Zeros(DType.F32, 4, 320),
            [module + ".lora_up.weight"] = Tensor.Zeros(DType.F32, 320, 4),
        });
        var e = Assert.Throws<CudaDreamException>(() => Sampler.Create(Fixtures.SdTiny(), new SamplerOptions { Loras = [LoraSource.Parse(path)] }));
        Assert.Contains(module, e.Message);
        Assert.Contains("[4,320]", e.Message);
        output.WriteLine(e.Message);
    }

    /// <summary>SDXL LoRAs name modules by the original-SD layout (input_blocks, …): nothing matches.</summary>
    [Fact]
    public void A_LoRA_whose_keys_match_nothing_is_refused()
    {
        var path = _dir.File("sdxl.safetensors");
        SafetensorsWriter.Write(path, new Dictionary<string, Tensor>
        {
            ["lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_down.weight"] = Tensor.Zeros(DType.F32, 4, 640),
            ["lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_up.weight"] = Tensor.Zeros(DType.F32, 640, 4),
        });
        var e = Assert.Throws<CudaDreamException>(() => Sampler.Create(Fixtures.SdTiny(), new SamplerOptions { Loras = [LoraSource.Parse(path)] }));
        Assert.Contains("no key matches a module of this model", e.Message);
    }
}
