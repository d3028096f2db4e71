using System.Globalization;
using CudaDream.Diffusion.Images;
using CudaDream.Diffusion.Sampling;
using CudaDream.Diffusion.Training;
using CudaDream.Engine.Formats;
using CudaDream.TestSupport;
using Xunit;
using Xunit.Abstractions;

namespace CudaDream.Diffusion.Tests.Training;

/// <summary>
/// The features kohya, OneTrainer and A1111 users ask for, on sd-tiny runs of a few steps: aspect-ratio buckets with exact
/// resume, EMA in the grid and the written LoRA, adamw8bit against fp32 AdamW, validation and TensorBoard logs, masks.
/// </summary>
public class KohyaFeatureTests(ITestOutputHelper output)
{
    private sealed class OnReport(Action<TrainingProgress> action) : IProgress<TrainingProgress>
    {
        public void Report(TrainingProgress value) => action(value);
    }

    /// <summary>A patterned image of the given size (different per seed), so latents differ.</summary>
    private static RgbImage Pattern(int width, int height, int seed)
    {
        var rgb = new byte[3 * width * height];
        for (int y = 0; y < height; y++)
            for (int x = 0; x < width; x++)
            {
                int i = 3 * (y * width + x);
                rgb[i] = (byte)((x * 7 + seed * 40) % 256);
                rgb[i + 1] = (byte)((y * 5 + seed * 90) % 256);
                rgb[i + 2] = (byte)(((x + y) * 3 + seed * 17) % 256);
            }
        return new RgbImage(width, height, rgb);
    }

    /// <summary>Instance images of mixed aspect ratios; at resolution 64 with steps 32 they fall into 64x64, 96x32 and 32x96.</summary>
    private static string MixedAspectConcept(TempDir dir)
    {
        var folder = dir.File("mixed");
        Directory.CreateDirectory(folder);
        var sizes = new[] { (64, 64), (96, 32), (32, 96), (200, 60), (70, 70), (60, 200) };
        for (int i = 0; i < sizes.Length; i++) PngFile.Write(Path.Combine(folder, $"shape_{i:D2}.png"), Pattern(sizes[i].Item1, sizes[i].Item2, i));
        return folder;
    }

    private static DreamBoothOptions Bucketed(TempDir dir, string name, int steps) => TrainingFixtures.Run(dir.File(name), steps) with
    {
        EnableBucket = true, MinBucketReso = 32, MaxBucketReso = 128, BucketResoSteps = 32, TrainBatchSize = 2, CheckpointEveryNSteps = 0,
        EvalEveryNSteps = 2, CenterCrop = false, RandomFlip = true,
        Concepts = new[] { TrainingFixtures.Tiles(classImagesPer: 1) with { InstanceDataDir = MixedAspectConcept(dir), InstancePrompt = "a sks pattern", NSaveSample = 0 } },
    };

    private static void AssertSameBytes(string expected, string actual)
    {
        var a = SafetensorsFile.ReadAll(expected);
        var b = SafetensorsFile.ReadAll(actual);
        Assert.Equal(a.Keys.OrderBy(k => k), b.Keys.OrderBy(k => k));
        foreach (var (k, t) in a) Assert.True(t.Data.Span.SequenceEqual(b[k].Data.Span), $"{k} differs");
    }

    [Fact]
    public void Mixed_aspect_buckets_train_and_resume_bit_for_bit()
    {
        using var dir = Fixtures.TempDir();
        var progress = new TrainingFixtures.Recorder();
        var straight = new DreamBoothTrainer(Bucketed(dir, "straight", 6)).Run(progress);
        foreach (var m in progress.Messages) output.WriteLine(m);
        Assert.True(straight.Completed);
        // Printed at start: the buckets and their images (kohya's list at 64 px with sides 32..128 in steps of 32).
        var messages = progress.Messages.ToList();
        Assert.Contains(messages, m => m.StartsWith("buckets (kohya's predefined list", StringComparison.Ordinal) && m.Contains("3 in use"));
        Assert.Contains("  bucket 64x64: 2 instance images, 6 class images", messages);
        Assert.Contains(messages, m => m.StartsWith("  bucket 96x32: 2 instance images", StringComparison.Ordinal));
        Assert.Contains(messages, m => m.StartsWith("  bucket 32x96: 2 instance images", StringComparison.Ordinal));
        // Latents are cached per bucket size: the latent files hold three different grids.
        var grids = Directory.GetFiles(Path.Combine(straight.OutputDir, "cache", "latents"))
            .Select(f => SafetensorsFile.ReadAll(f)["value"].Shape).Select(s => (s[1], s[2])).Distinct().ToHashSet();
        Assert.Superset(new HashSet<(int, int)> { (8, 8), (4, 12), (12, 4) }, grids);

        using var stop = new CancellationTokenSource();
        var interrupted = new DreamBoothTrainer(Bucketed(dir, "resumed", 6)).Run(new OnReport(p => { if (p.Phase == "training" && p.Step == 3) stop.Cancel(); }), stop.Token);
        Assert.False(interrupted.Completed);
        var resumed = new DreamBoothTrainer(Bucketed(dir, "resumed", 6) with { Resume = true }).Run();
        Assert.True(resumed.Completed);
        AssertSameBytes(straight.LoraPath!, resumed.LoraPath!);
        Assert.Equal(File.ReadAllText(Path.Combine(straight.OutputDir, "loss.csv")), File.ReadAllText(Path.Combine(resumed.OutputDir, "loss.csv")));
    }

    [Fact]
    public void Ema_lora_differs_from_the_raw_one_and_is_what_the_grid_shows()
    {
        using var dir = Fixtures.TempDir();
        var concept = TrainingFixtures.Rings() with { NSaveSample = 1, SaveInferSteps = 3 };
        var options = TrainingFixtures.Run(dir.File("run"), steps: 6) with
        {
            UseEma = true, EmaDecay = 0.9, EmaSaveRaw = true, CheckpointEveryNSteps = 3, LearningRate = 1e-2, Concepts = new[] { concept },
        };
        var result = new DreamBoothTrainer(options).Run();
        Assert.True(result.Completed);
        var rawPath = Path.Combine(options.OutputDir, "lora-raw.safetensors");
        Assert.True(File.Exists(rawPath));
        var ema = SafetensorsFile.ReadAll(result.LoraPath!);
        var raw = SafetensorsFile.ReadAll(rawPath);
        var up = ema.Keys.First(k => k.EndsWith(".lora_up.weight", StringComparison.Ordinal));
        Assert.True(TensorAssert.RelativeMaxError(raw[up], ema[up]) > 1e-3, "the EMA LoRA should differ from the raw one");
        Assert.True(File.Exists(Path.Combine(options.OutputDir, "checkpoints", "step-000006", TrainingCheckpoints.EmaFile)));

        // The final grid is the EMA LoRA's image: regenerate the cell from each written file and compare pixels.
        var grid = ImageLoader.Load(Path.Combine(options.OutputDir, "samples", "step-000006.png"));
        RgbImage Cell(string lora)
        {
            using var sampler = Sampler.Create(options.Model, new SamplerOptions { Engine = SamplerEngine.CudaDream, Loras = new[] { new LoraSource.File(lora) } });
            var image = sampler.Generate(new GenerationRequest
            {
                Prompt = concept.SaveSamplePrompt, Steps = concept.SaveInferSteps, CfgScale = concept.SaveGuidanceScale, Scheduler = options.SampleScheduler,
                Seed = concept.SampleSeed, Width = 64, Height = 64, BatchSize = 1,
            }).Images[0].Image;
            // Grid cells are enlarged to sample_cell_size (128 px by default): 64 px samples by 2.
            return ImageGrid.Compose(new[] { ImageGrid.Enlarge(image, 2) }, 1, new[] { concept.SaveSamplePrompt });
        }
        double Difference(RgbImage a) => a.Rgb.Zip(grid.Rgb, (x, y) => Math.Abs(x - y)).Max();
        Assert.Equal((grid.Width, grid.Height), (Cell(result.LoraPath!).Width, Cell(result.LoraPath!).Height));
        double emaDiff = Difference(Cell(result.LoraPath!)), rawDiff = Difference(Cell(rawPath));
        output.WriteLine($"max pixel difference to the grid: EMA LoRA {emaDiff}, raw LoRA {rawDiff}");
        Assert.True(emaDiff <= 1, $"the grid is not the EMA LoRA's image (max difference {emaDiff})");
        Assert.True(rawDiff > emaDiff, "the raw LoRA's image should differ from the grid");

        // Resume keeps the average: continuing from step 3 gives the same EMA LoRA.
        Directory.Delete(Path.Combine(options.OutputDir, "checkpoints", "step-000006"), true);
        var resumed = new DreamBoothTrainer(options with { Resume = true }).Run();
        AssertSameBytes(rawPath, Path.Combine(options.OutputDir, "lora-raw.safetensors"));
        Assert.True(SafetensorsFile.ReadAll(resumed.LoraPath!)[up].Data.Span.SequenceEqual(ema[up].Data.Span), "EMA after resume differs");
    }

    [Fact]
    public void Adamw8bit_loss_curve_stays_within_five_percent_of_adamw()
    {
        using var dir = Fixtures.TempDir();
        DreamBoothOptions Options(string optimizer) => TrainingFixtures.Run(dir.File(optimizer), steps: 20) with
        {
            Optimizer = optimizer, CheckpointEveryNSteps = 0, EvalEveryNSteps = 5, Concepts = new[] { TrainingFixtures.Rings() with { NSaveSample = 0 } },
        };
        var messages = new TrainingFixtures.Recorder();
        var full = new DreamBoothTrainer(Options("adamw")).Run(messages);
        var q8 = new DreamBoothTrainer(Options("adamw8bit")).Run(messages);
        static List<double> Losses(string outputDir) => File.ReadAllLines(Path.Combine(outputDir, "loss.csv")).Skip(1)
            .Select(l => double.Parse(l.Split(',')[1], CultureInfo.InvariantCulture)).ToList();
        var a = Losses(full.OutputDir);
        var b = Losses(q8.OutputDir);
        Assert.Equal(20, b.Count);
        for (int i = 0; i < a.Count; i++)
            Assert.True(Math.Abs(b[i] - a[i]) <= 0.05 * a[i], $"step {i + 1}: adamw8bit loss {b[i]} vs adamw {a[i]}");
        for (int i = 0; i < full.EvalLosses.Count; i++)
            Assert.True(Math.Abs(q8.EvalLosses[i].Loss - full.EvalLosses[i].Loss) <= 0.05 * full.EvalLosses[i].Loss, $"eval {i}");
        // Printed at start: the state's size against fp32 AdamW's.
        var line = messages.Messages.First(m => m.StartsWith("optimizer: adamw8bit", StringComparison.Ordinal));
        output.WriteLine(line);
        Assert.Matches(@"\((2[0-9]|30) ?% of fp32 AdamW", line);
    }

    [Fact]
    public void Validation_loss_and_tensorboard_logs_are_written()
    {
        using var dir = Fixtures.TempDir();
        var options = TrainingFixtures.Run(dir.File("run"), steps: 4) with
        {
            ValidationSplit = 0.25, ValidationEveryNSteps = 2, LogWith = "tensorboard", SampleEveryNSteps = 2, CheckpointEveryNSteps = 0,
            Optimizer = "prodigy", LearningRate = 1.0, ShuffleCaption = true, CaptionDropoutRate = 0.2,
            Concepts = new[] { TrainingFixtures.Rings() with { NSaveSample = 1, SaveInferSteps = 2, InstancePrompt = "zwx rings, [filewords], teal" } },
        };
        var progress = new TrainingFixtures.Recorder();
        var result = new DreamBoothTrainer(options).Run(progress);
        Assert.True(result.Completed);
        Assert.Contains(progress.Messages, m => m.StartsWith("validation: 1 images", StringComparison.Ordinal));
        var rows = File.ReadAllLines(Path.Combine(options.OutputDir, "loss.csv"));
        Assert.Equal("step,loss,lr,eval_loss,val_loss", rows[0]);
        var val = rows.Skip(1).Select(r => r.Split(',')[4]).ToList();
        Assert.Equal(new[] { false, true, false, true }, val.Select(v => v.Length > 0));
        Assert.All(val.Where(v => v.Length > 0), v => Assert.True(double.Parse(v, CultureInfo.InvariantCulture) > 0));

        var logs = Directory.GetFiles(Path.Combine(options.OutputDir, "logs"), "events.out.tfevents.*");
        var bytes = File.ReadAllBytes(Assert.Single(logs));
        bool Has(string s) => bytes.AsSpan().IndexOf(System.Text.Encoding.UTF8.GetBytes(s)) >= 0;
        Assert.True(Has("loss/train") && Has("loss/validation") && Has("loss/eval") && Has("lr") && Has("samples") && Has("brain.Event:2"));
        Assert.True(bytes.AsSpan().IndexOf(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }) >= 0, "the sample grid's PNG is in the log");
    }

    [Fact]
    public void Validation_split_holds_images_out_of_training_by_seed()
    {
        var options = TrainingFixtures.Run("/tmp/unused", 1) with { ValidationSplit = 0.5, Concepts = new[] { TrainingFixtures.Tiles(0), TrainingFixtures.Rings() } };
        var data = TrainingData.Scan(options, _ => { });
        Assert.Equal(4, data.Validation.Count); // 2 of each concept's 4
        Assert.Equal(new[] { 2, 2 }, data.Instances.Select(i => i.Count));
        Assert.Empty(data.Instances.SelectMany(i => i).Select(i => i.Path).Intersect(data.Validation.Select(v => v.Path)));
        var again = TrainingData.Scan(options, _ => { });
        Assert.Equal(data.Validation.Select(v => v.Path), again.Validation.Select(v => v.Path));
        var other = TrainingData.Scan(options with { Seed = 99 }, _ => { });
        Assert.NotEqual(data.Validation.Select(v => v.Path), other.Validation.Select(v => v.Path));
    }

    [Fact]
    public void New_settings_are_validated_together()
    {
        var o = TrainingFixtures.Run("/tmp/out", 1) with
        {
            Optimizer = "adam8", BucketResoSteps = 12, CaptionDropoutRate = 1.5, KeepTokens = -1, ValidationSplit = 0.3, ValidationDataDir = "/nowhere",
            EmaDecay = 2, EmaSaveRaw = true, LogWith = "wandb", CaptionExtension = "txt", LionBeta2 = 1, ProdigyD0 = 0, CaptionTagDropoutRate = -0.1,
        };
        var problems = DreamBoothConfig.Validate(o);
        foreach (var expected in new[]
                 {
                     "optimizer: 'adam8'", "bucket_reso_steps: 12", "caption_dropout_rate: 1.5", "keep_tokens", "validation_split, validation_data_dir: choose one",
                     "validation_data_dir: folder '/nowhere' not found", "ema_decay: 2", "ema_save_raw: needs use_ema", "log_with: 'wandb'",
                     "caption_extension: 'txt'", "lion_beta1, lion_beta2", "prodigy_d0", "caption_tag_dropout_rate",
                 })
            Assert.Contains(problems, p => p.StartsWith(expected, StringComparison.Ordinal));
    }
}
