using CudaDream.Diffusion.Images;
using CudaDream.Diffusion.Models.Export;
using CudaDream.Diffusion.Models.Import;
using CudaDream.Diffusion.Sampling;
using CudaDream.Diffusion.Training;
using CudaDream.Engine.Formats;
using CudaDream.Engine.Tensors;
using CudaDream.TestSupport;
using Xunit;
using Xunit.Abstractions;

namespace CudaDream.Diffusion.Tests.Training;

public class DreamBoothTrainerTests(ITestOutputHelper output)
{
    /// <summary>
    /// [T1] acceptance: rank-4 LoRA on sd-tiny, two concepts, prior preservation with generated class images,
    /// 30 steps on the CPU: the fixed-set loss falls; samples, checkpoints and the LoRA are written; sampling with the
    /// LoRA equals sampling the model with the LoRA merged into its weights.
    /// </summary>
    [Fact]
    public void TrainsTwoConceptsWithPriorPreservation()
    {
        using var dir = Fixtures.TempDir();
        // The fixture checkpoint imported into CudaDream's own graphs (the primary training path), so it can be exported merged.
        var model = dir.File("model");
        CheckpointImporter.Import(Fixtures.SdTiny("checkpoint.safetensors"), model, new ImportOptions { TokenizerDir = Fixtures.SdTiny("tokenizer"), ConfigDir = Fixtures.SdTiny("configs") });
        var options = TrainingFixtures.Run(dir.File("run"), steps: 30) with { Model = model, SampleEveryNSteps = 15, LoraTargets = new[] { "kohya" } };
        var progress = new TrainingFixtures.Recorder();
        var result = new DreamBoothTrainer(options).Run(progress);
        foreach (var m in progress.Messages) output.WriteLine(m);

        Assert.True(result.Completed);
        Assert.Equal(30, result.Updates);
        // Class images: 1 per instance image of concept 0, generated with their parameters and captions.
        var classDir = Path.Combine(options.OutputDir, "class_images", "concept-0");
        var classImages = Directory.GetFiles(classDir, "*.png");
        Assert.Equal(4, classImages.Length);
        Assert.Contains("Steps: 4", PngText.Read(classImages[0])["parameters"]);
        Assert.Equal("a pattern", File.ReadAllText(Path.ChangeExtension(classImages[0], ".txt")));
        // The fixed-set loss falls.
        var eval = result.EvalLosses;
        output.WriteLine($"eval loss {eval[0].Loss:F4} -> {eval[^1].Loss:F4}");
        Assert.True(eval[^1].Loss < eval[0].Loss, $"fixed-set loss did not fall: {string.Join(", ", eval.Select(e => e.Loss.ToString("F4")))}");
        // Samples, checkpoints, loss log.
        Assert.True(File.Exists(Path.Combine(options.OutputDir, "samples", "step-000015.png")));
        Assert.True(File.Exists(Path.Combine(options.OutputDir, "samples", "step-000030.png")));
        Assert.True(File.Exists(Path.Combine(options.OutputDir, "loss.png")));
        Assert.Equal(31, File.ReadAllLines(Path.Combine(options.OutputDir, "loss.csv")).Length);
        var checkpoints = Directory.GetDirectories(Path.Combine(options.OutputDir, "checkpoints")).Select(Path.GetFileName).OrderBy(n => n).ToList();
        Assert.Equal(new[] { "step-000010", "step-000020", "step-000030" }, checkpoints);
        // The LoRA: kohya keys, alpha scalars, metadata.
        using (var lora = SafetensorsFile.Open(result.LoraPath!))
        {
            Assert.Equal("4", lora.Metadata["ss_network_dim"]);
            Assert.Equal("30", lora.Metadata["ss_steps"]);
            Assert.Contains("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight", lora.Names);
            Assert.Contains("lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight", lora.Names);
            Assert.Empty(lora.Get("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.alpha").Shape);
            Assert.Equal(new[] { 4, 32 }, lora.Get("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight").Shape);
            Assert.Equal(new[] { 32, 4, 1, 1 }, lora.Get("lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight").Shape);
        }

        // Sampling with the LoRA (ONNX Runtime, weights overridden at session creation) = the CudaDream engine on the
        // model exported with the LoRA merged into its weights.
        var merged = dir.File("merged");
        ModelExporter.Export(model, merged, new ExportOptions { Format = ExportFormat.Onnx, Loras = new[] { new LoraSpec(result.LoraPath!, 1f) } });
        var request = new GenerationRequest { Prompt = "a sks pattern", Steps = 4, Seed = 9, Width = 64, Height = 64, Scheduler = "ddim" };
        using var withLora = Sampler.Create(model, new SamplerOptions { Engine = SamplerEngine.Ort, Loras = new[] { new LoraSource.File(result.LoraPath!) } });
        using var mergedModel = Sampler.Create(merged, new SamplerOptions { Engine = SamplerEngine.CudaDream });
        using var baseModel = Sampler.Create(model, new SamplerOptions { Engine = SamplerEngine.Ort });
        var a = withLora.Generate(request).FinalLatents;
        var b = mergedModel.Generate(request).FinalLatents;
        var c = baseModel.Generate(request).FinalLatents;
        TensorAssert.Close(b, a, 1e-4, "LoRA at sampling time vs merged weights");
        Assert.True(TensorAssert.RelativeMaxError(c, a) > 1e-3, "the trained LoRA should change the samples");
    }

    /// <summary>Text-encoder LoRA, v-prediction, Min-SNR, noise offset, accumulation and SGD all run and write their tensors.</summary>
    [Fact]
    public void TextEncoderAndObjectiveOptionsRun()
    {
        using var dir = Fixtures.TempDir();
        var options = TrainingFixtures.Run(dir.File("run"), steps: 4) with
        {
            TrainTextEncoder = true, TextEncoderLr = 1e-3, PredictionType = "v_prediction", MinSnrGamma = 5, NoiseOffset = 0.05,
            GradientAccumulationSteps = 2, Optimizer = "sgd", LoraDropout = 0.1, GradientCheckpointing = true, ClipSkip = 2,
            Concepts = new[] { TrainingFixtures.Tiles(classImagesPer: 0) }, EvalEveryNSteps = 2, CheckpointEveryNSteps = 0,
        };
        var result = new DreamBoothTrainer(options).Run();
        Assert.True(result.Completed);
        using var lora = SafetensorsFile.Open(result.LoraPath!);
        var te = lora.Names.Where(n => n.StartsWith("lora_te_text_model_encoder_layers_0_self_attn_q_proj", StringComparison.Ordinal)).ToList();
        Assert.Equal(3, te.Count);
        // Trained: the up projections left zero.
        Assert.Contains(lora.Get("lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight").ToFloat32Array(), v => v != 0);
        Assert.All(result.EvalLosses, e => Assert.True(double.IsFinite(e.Loss)));
    }

    /// <summary>Resolution is W×H: a portrait run (64 wide, 96 high) with random crops and flips trains and samples at that shape.</summary>
    [Fact]
    public void NonSquareResolutionWithRandomCrops()
    {
        using var dir = Fixtures.TempDir();
        var options = TrainingFixtures.Run(dir.File("run"), steps: 2) with
        {
            Resolution = "64x96", CenterCrop = false, RandomFlip = true, CheckpointEveryNSteps = 0,
            Concepts = new[] { TrainingFixtures.Tiles(classImagesPer: 0) with { NSaveSample = 1 } },
        };
        var result = new DreamBoothTrainer(options).Run();
        Assert.True(result.Completed);
        var grid = ImageLoader.Load(Path.Combine(options.OutputDir, "samples", "step-000002.png"));
        Assert.True(grid.Height > grid.Width, $"portrait samples expected, grid is {grid.Width}x{grid.Height}");
        // Random crops are cached per crop: more than one latent per image.
        Assert.True(Directory.GetFiles(Path.Combine(options.OutputDir, "cache", "latents")).Length >= 2);
    }

    [Fact]
    public void SelectedLayerFineTuningWritesChangedWeights()
    {
        using var dir = Fixtures.TempDir();
        var options = TrainingFixtures.Run(dir.File("run"), steps: 3) with
        {
            TrainLayers = new[] { "*attn2.to_k.weight", "up_blocks.1.attentions.0.norm.*" },
            Concepts = new[] { TrainingFixtures.Rings() }, CheckpointEveryNSteps = 0, LearningRate = 1e-3,
        };
        var result = new DreamBoothTrainer(options).Run();
        Assert.Null(result.LoraPath);
        var weights = SafetensorsFile.ReadAll(result.WeightsPath!);
        Assert.Contains("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight", weights.Keys);
        Assert.Contains("unet.up_blocks.1.attentions.0.norm.weight", weights.Keys);
        // Written in the state dict's [out, in] layout even though the torch export stores Wᵀ.
        Assert.Equal(new[] { 32, 32 }, weights["unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"].Shape);
        Assert.Equal(new[] { 64 }, weights["unet.up_blocks.1.attentions.0.norm.weight"].Shape);
    }
}

/// <summary>
/// The trainer on the kernel path: the same run on the CPU backend and on the emulated CUDA backend (the real
/// kernels/*.cu through the emulator, driven by the device executor) gives the same LoRA within fp32 noise.
/// SGD without momentum keeps the update linear in the gradient, so kernel rounding differences stay small.
/// </summary>
public class DreamBoothBackendTests
{
    [Fact]
    public void EmulatedCudaBackendTrainsLikeTheCpu()
    {
        using var dir = Fixtures.TempDir();
        DreamBoothOptions Options(string backend) => TrainingFixtures.Run(dir.File(backend), steps: 3) with
        {
            Backend = backend, Optimizer = "sgd", SgdMomentum = 0, LearningRate = 1e-2, EvalEveryNSteps = 1, CheckpointEveryNSteps = 0,
            Concepts = new[] { TrainingFixtures.Rings() } ,
        };
        var cpu = new DreamBoothTrainer(Options("cpu")).Run();
        var progress = new TrainingFixtures.Recorder();
        var emu = new DreamBoothTrainer(Options("emu")).Run(progress);
        Assert.Contains(progress.Messages, m => m.StartsWith("backend: emu", StringComparison.Ordinal));
        Assert.Equal(cpu.EvalLosses.Count, emu.EvalLosses.Count);
        for (int i = 0; i < cpu.EvalLosses.Count; i++)
            Assert.True(Math.Abs(cpu.EvalLosses[i].Loss - emu.EvalLosses[i].Loss) <= 1e-4 * cpu.EvalLosses[i].Loss, $"eval loss {i}: cpu {cpu.EvalLosses[i].Loss} emu {emu.EvalLosses[i].Loss}");
        var a = SafetensorsFile.ReadAll(cpu.LoraPath!);
        var b = SafetensorsFile.ReadAll(emu.LoraPath!);
        Assert.Equal(a.Keys.OrderBy(k => k), b.Keys.OrderBy(k => k));
        foreach (var (k, t) in a) TensorAssert.Close(t, b[k], 1e-4, k);
    }
}
