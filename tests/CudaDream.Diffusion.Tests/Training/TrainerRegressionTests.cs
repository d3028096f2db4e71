using CudaDream.Diffusion.Images;
using CudaDream.Diffusion.Models;
using CudaDream.Diffusion.Models.Import;
using CudaDream.Diffusion.Sampling;
using CudaDream.Diffusion.Training;
using CudaDream.Engine.Formats;
using CudaDream.TestSupport;
using Xunit;

namespace CudaDream.Diffusion.Tests.Training;

/// <summary>Regressions found by probing the trainer with settings and data the first tests did not use.</summary>
public class TrainerRegressionTests
{
    /// <summary>Reports on the training thread, in order (Progress&lt;T&gt; would post them to the thread pool).</summary>
    private sealed class OnReport(Action<TrainingProgress> action) : IProgress<TrainingProgress>
    {
        public void Report(TrainingProgress value) => action(value);
    }

    private static void AssertSameFiles(string expected, string actual)
    {
        var a = SafetensorsFile.ReadAll(expected);
        var b = SafetensorsFile.ReadAll(actual);
        Assert.Equal(a.Keys.OrderBy(k => k), b.Keys.OrderBy(k => k));
        foreach (var (k, t) in a) Assert.True(t.Data.Span.SequenceEqual(b[k].Data.Span), $"{k} differs");
    }

    /// <summary>
    /// Ctrl-C that lands in the sample grid after update 2 (the update is applied) must checkpoint update 2, not 1:
    /// the resumed run then equals an uninterrupted one bit for bit instead of applying update 2 twice.
    /// </summary>
    [Fact]
    public void InterruptDuringASampleGridCheckpointsTheAppliedUpdate()
    {
        using var dir = Fixtures.TempDir();
        DreamBoothOptions Options(string name) => TrainingFixtures.Run(dir.File(name), steps: 4) with
        {
            SampleEveryNSteps = 2, CheckpointEveryNSteps = 0, EvalEveryNSteps = 2,
            Concepts = new[] { TrainingFixtures.Rings() with { NSaveSample = 1, SaveInferSteps = 2 } },
        };
        var straight = new DreamBoothTrainer(Options("straight")).Run();

        using var stop = new CancellationTokenSource();
        // Update 2's report comes before its sample grid, so the grid's sampler is the first to see the stop.
        var interrupted = new DreamBoothTrainer(Options("resumed")).Run(new OnReport(p => { if (p.Phase == "training" && p.Step == 2) stop.Cancel(); }), stop.Token);
        Assert.False(interrupted.Completed);
        Assert.Equal(2, interrupted.Updates);
        Assert.Equal("step-000002", Path.GetFileName(interrupted.LastCheckpoint));

        var resumed = new DreamBoothTrainer(Options("resumed") with { Resume = true }).Run();
        Assert.True(resumed.Completed);
        AssertSameFiles(straight.LoraPath!, resumed.LoraPath!);
        Assert.Equal(File.ReadAllText(Path.Combine(straight.OutputDir, "loss.csv")), File.ReadAllText(Path.Combine(resumed.OutputDir, "loss.csv")));
    }

    /// <summary>n_save_sample 0 on every concept (allowed) means no sample grid, not a failure after the LoRA is written.</summary>
    [Fact]
    public void NoSampleImagesAskedWritesNoGrid()
    {
        using var dir = Fixtures.TempDir();
        var options = TrainingFixtures.Run(dir.File("run"), steps: 2) with
        {
            SampleEveryNSteps = 1, CheckpointEveryNSteps = 0,
            Concepts = new[] { TrainingFixtures.Tiles(classImagesPer: 0) with { NSaveSample = 0 }, TrainingFixtures.Rings() with { NSaveSample = 0 } },
        };
        var result = new DreamBoothTrainer(options).Run();
        Assert.True(result.Completed);
        Assert.True(File.Exists(result.LoraPath));
        Assert.False(Directory.Exists(Path.Combine(options.OutputDir, "samples")));
    }

    /// <summary>
    /// num_train_epochs counts passes over the instance images: 3 epochs of 4 images at 3 examples per update are
    /// 12 examples, 4 updates (a per-epoch floor gave 1 update per epoch, 2.25 epochs, and reported 3).
    /// </summary>
    [Fact]
    public void EpochsCountPassesOverTheData()
    {
        using var dir = Fixtures.TempDir();
        var options = TrainingFixtures.Run(dir.File("run"), steps: 0) with
        {
            NumTrainEpochs = 3, TrainBatchSize = 3, CheckpointEveryNSteps = 0,
            Concepts = new[] { TrainingFixtures.Tiles(classImagesPer: 0) with { NSaveSample = 0 } },
        };
        var progress = new TrainingFixtures.Recorder();
        var result = new DreamBoothTrainer(options).Run(progress);
        Assert.Equal(4, Directory.GetFiles(options.Concepts[0].InstanceDataDir).Length);
        Assert.Equal(4, result.Updates);
        Assert.Contains(progress.Messages, m => m.Contains("(3.0 epochs)", StringComparison.Ordinal));
    }

    /// <summary>
    /// A class prompt with [filewords]: each generated class image is trained with the prompt it was generated from
    /// (recorded in its PNG parameters), not with the class prompt filled a second time ("a pattern of a pattern of …").
    /// </summary>
    [Fact]
    public void GeneratedClassImagesTrainWithTheirGenerationPrompt()
    {
        using var dir = Fixtures.TempDir();
        var options = TrainingFixtures.Run(dir.File("run"), steps: 1) with
        {
            Concepts = new[] { TrainingFixtures.Tiles() with { ClassPrompt = "a pattern of [filewords]", ClassInferSteps = 1 } },
        };
        var model = ModelFolder.Open(options.Model);
        var data = TrainingData.Scan(options, _ => { });
        var classDirs = ClassImages.Prepare(options, data, model, SamplerEngine.CudaDream, _ => { }, null, CancellationToken.None);
        var classes = data.WithClassImages(classDirs, options, _ => { }).Classes[0];
        Assert.Equal(4, classes.Count);
        foreach (var image in classes)
        {
            var generatedWith = PngText.Read(image.Path)["parameters"].Split('\n')[0];
            Assert.StartsWith("a pattern of orange tiles", generatedWith, StringComparison.Ordinal);
            Assert.Equal(generatedWith, image.Prompt);
        }
    }

    /// <summary>
    /// train_layers selects GroupNorm weights on CudaDream's own graphs as on the torch export, and trains them alike. On
    /// built graphs it skipped them: constant folding turned the builder's Reshape(γ, [C,1,1]) into an anonymous constant.
    /// </summary>
    [Fact]
    public void SelectedLayersAreTheSameOnBuiltAndExportedGraphs()
    {
        using var dir = Fixtures.TempDir();
        var built = dir.File("model");
        CheckpointImporter.Import(Fixtures.SdTiny("checkpoint.safetensors"), built, new ImportOptions { TokenizerDir = Fixtures.SdTiny("tokenizer"), ConfigDir = Fixtures.SdTiny("configs") });
        // SGD without momentum keeps the update linear in the gradient, so the two graphs' rounding stays small.
        DreamBoothOptions Options(string model, string run) => TrainingFixtures.Run(dir.File(run), steps: 2) with
        {
            Model = model, TrainLayers = new[] { "*resnets.0.norm1.*", "*attentions.0.norm.*", "*attn2.to_k.weight" },
            Optimizer = "sgd", SgdMomentum = 0, LearningRate = 1e-1, CheckpointEveryNSteps = 0,
            Concepts = new[] { TrainingFixtures.Rings() with { NSaveSample = 0 } },
        };
        var exported = SafetensorsFile.ReadAll(new DreamBoothTrainer(Options(Fixtures.SdTiny(), "exported")).Run().WeightsPath!);
        var ours = SafetensorsFile.ReadAll(new DreamBoothTrainer(Options(built, "built")).Run().WeightsPath!);
        Assert.Contains("unet.down_blocks.0.resnets.0.norm1.weight", ours.Keys);
        Assert.Contains("unet.down_blocks.0.attentions.0.norm.bias", ours.Keys);
        Assert.Equal(exported.Keys.OrderBy(k => k), ours.Keys.OrderBy(k => k));
        foreach (var (k, t) in exported) TensorAssert.Close(t, ours[k], 1e-4, k);
    }

    /// <summary>
    /// A selected-layer run's sample grids show the tuned weights (they showed the base model: only LoRAs reached the
    /// sampler): the grid after training differs from the grid of the same run with learning rate 0.
    /// </summary>
    [Fact]
    public void SelectedLayerSampleGridsShowTheTunedWeights()
    {
        using var dir = Fixtures.TempDir();
        DreamBoothOptions Options(string run, double lr) => TrainingFixtures.Run(dir.File(run), steps: 2) with
        {
            TrainLayers = new[] { "*attn2.to_k.weight", "*attn2.to_v.weight", "*resnets.0.norm1.*" }, LearningRate = lr, CheckpointEveryNSteps = 0,
            Concepts = new[] { TrainingFixtures.Rings() with { NSaveSample = 1, SaveInferSteps = 3 } },
        };
        var progress = new TrainingFixtures.Recorder();
        var tuned = new DreamBoothTrainer(Options("tuned", 0.1)).Run(progress);
        var frozen = new DreamBoothTrainer(Options("frozen", 0)).Run();
        Assert.DoesNotContain(progress.Messages, m => m.StartsWith("warning: sample grids", StringComparison.Ordinal));
        var a = ImageLoader.Load(Path.Combine(tuned.OutputDir, "samples", "step-000002.png"));
        var b = ImageLoader.Load(Path.Combine(frozen.OutputDir, "samples", "step-000002.png"));
        Assert.False(a.Rgb.AsSpan().SequenceEqual(b.Rgb), "the sample grid of the tuned run equals the untrained one");
    }

    /// <summary>
    /// Selected UNet layers trained beside a text-encoder LoRA write both results (the tuned UNet weights were lost:
    /// only the LoRA was written), each step's snapshot too.
    /// </summary>
    [Fact]
    public void SelectedLayersWithATextEncoderLoraWriteBoth()
    {
        using var dir = Fixtures.TempDir();
        var options = TrainingFixtures.Run(dir.File("run"), steps: 2) with
        {
            TrainLayers = new[] { "*attn2.to_k.weight" }, TrainTextEncoder = true, SaveEveryNSteps = 1, CheckpointEveryNSteps = 0,
            Concepts = new[] { TrainingFixtures.Rings() with { NSaveSample = 0 } },
        };
        var result = new DreamBoothTrainer(options).Run();
        using (var lora = SafetensorsFile.Open(result.LoraPath!))
            Assert.All(lora.Names, k => Assert.StartsWith("lora_te_", k, StringComparison.Ordinal));
        var weights = SafetensorsFile.ReadAll(result.WeightsPath!);
        Assert.Equal(11, weights.Count);
        Assert.All(weights.Keys, k => Assert.Matches(@"^unet\..*attn2\.to_k\.weight$", k));
        Assert.True(File.Exists(Path.Combine(options.OutputDir, "lora-step000001.weights.safetensors")));
        Assert.True(File.Exists(Path.Combine(options.OutputDir, "lora-step000001.safetensors")));
    }

    /// <summary>A caption longer than CLIP's 77 tokens is cut in training as in sampling, and now says so (it was silent).</summary>
    [Fact]
    public void LongCaptionsAreCutWithAWarning()
    {
        using var dir = Fixtures.TempDir();
        var images = Directory.CreateDirectory(dir.File("images")).FullName;
        File.Copy(Path.Combine(TrainingFixtures.Concepts("teal-rings"), "rings_01.jpg"), Path.Combine(images, "a.jpg"));
        File.Copy(Path.Combine(TrainingFixtures.Concepts("teal-rings"), "rings_02.jpg"), Path.Combine(images, "b.jpg"));
        File.WriteAllText(Path.Combine(images, "a.txt"), "teal rings, " + string.Join(" ", Enumerable.Range(1, 80).Select(i => $"w{i}")) + " — ümlaut tail");
        var options = TrainingFixtures.Run(dir.File("run"), steps: 1) with
        {
            CheckpointEveryNSteps = 0, Concepts = new[] { TrainingFixtures.Rings() with { InstanceDataDir = images, NSaveSample = 0 } },
        };
        var progress = new TrainingFixtures.Recorder();
        new DreamBoothTrainer(options).Run(progress);
        var warning = Assert.Single(progress.Messages, m => m.Contains("longer than 77 tokens", StringComparison.Ordinal));
        Assert.Contains(Path.Combine(images, "a.jpg"), warning);
        Assert.EndsWith("ümlaut tail", warning);
    }
}
