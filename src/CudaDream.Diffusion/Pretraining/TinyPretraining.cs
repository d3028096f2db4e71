using System.Diagnostics;
using CudaDream.Diffusion.Images;
using CudaDream.Diffusion.Models;
using CudaDream.Diffusion.Models.Builder;
using CudaDream.Diffusion.Models.Export;
using CudaDream.Diffusion.Models.Import;
using CudaDream.Diffusion.Training;
using CudaDream.Engine;
using CudaDream.Engine.Formats;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Randomness;
using CudaDream.Engine.Tensors;
using CudaDream.Engine.Training;
using CudaDream.Engine.Training.Optimizers;

namespace CudaDream.Diffusion.Pretraining;

/// <summary>What <c>cudadream pretrain-tiny</c> trains, and for how long.</summary>
public sealed record TinyPretrainOptions
{
    public required string OutDir { get; init; }
    public ulong Seed { get; init; } = 1;
    public int ImageSize { get; init; } = 64;
    /// <summary>Captioned scenes the UNet learns from (the autoencoder draws its own, unlimited).</summary>
    public int Scenes { get; init; } = 2048;
    public int AutoencoderSteps { get; init; } = 1500;
    public int AutoencoderBatch { get; init; } = 16;
    public double AutoencoderLearningRate { get; init; } = 2e-3;
    public int UNetSteps { get; init; } = 4000;
    public int UNetBatch { get; init; } = 16;
    public double UNetLearningRate { get; init; } = 1e-3;
    /// <summary>Where the scene images, caches and checkpoints go (default: OutDir + ".work"); a killed run resumes from there.</summary>
    public string? WorkDir { get; init; }
}

/// <summary>
/// Pretrains the embedded tiny model from nothing with CudaDream's own engine: (1) a CLIP-format tokenizer learned on the
/// caption words (<see cref="CaptionVocabulary"/>); (2) an SD-architecture model (CLIP text encoder, UNet with
/// cross-attention, KL VAE, all at small widths) with seeded random weights; (3) the VAE trained as an autoencoder on
/// procedural scenes (<see cref="ShapeScenes"/>), flat and toon-styled alike so the latent space can hold either look;
/// (4) the UNet trained as a latent diffusion model on the flat scenes with their captions, by the DreamBooth trainer
/// itself (train_layers "*": every UNet weight), the text encoder frozen at its seeded weights; (5) the result written as
/// a diffusers ONNX folder. The toon look never reaches the UNet: it is the style the quick start teaches.
/// </summary>
public static class TinyPretraining
{
    public static SdModelConfig Config(int vocabSize, int imageSize) => new(
        new UNetConfig
        {
            SampleSize = imageSize / 8, BlockOutChannels = [32, 64, 64],
            DownBlockTypes = ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
            UpBlockTypes = ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
            LayersPerBlock = 1, AttentionHeads = [2, 2, 2], CrossAttentionDim = 64, NormGroups = 8,
        },
        new VaeConfig { BlockOutChannels = [8, 16, 32, 64], LayersPerBlock = 1, NormGroups = 8, SampleSize = imageSize },
        new ClipTextConfig
        {
            VocabSize = vocabSize, HiddenSize = 64, IntermediateSize = 128, NumLayers = 2, NumHeads = 2, ProjectionDim = 64,
            BosTokenId = vocabSize - 2, EosTokenId = vocabSize - 1, PadTokenId = vocabSize - 1,
        });

    public static void Run(TinyPretrainOptions o, Action<string> log)
    {
        if (o.ImageSize % 8 != 0 || o.ImageSize < 32) throw new CudaDreamException($"image size {o.ImageSize}: a multiple of 8, at least 32");
        var clock = Stopwatch.StartNew();
        string work = Path.GetFullPath(o.WorkDir ?? o.OutDir.TrimEnd('/', '\\') + ".work");
        Directory.CreateDirectory(work);

        var vocabulary = CaptionVocabulary.Train(ShapeScenes.CaptionWords());
        string tokenizerDir = Path.Combine(work, "tokenizer");
        CaptionVocabulary.Write(vocabulary, tokenizerDir);
        var config = Config(vocabulary.Tokens.Count, o.ImageSize);
        log($"tokenizer: {vocabulary.Tokens.Count} tokens ({vocabulary.Merges.Count} merges) over {ShapeScenes.CaptionWords().Count()} caption words");

        var initial = RandomWeights.For(config, o.Seed);
        string vaeFile = Path.Combine(work, "vae.safetensors");
        Dictionary<string, Tensor> vae;
        if (File.Exists(vaeFile))
        {
            vae = SafetensorsFile.ReadAll(vaeFile);
            log($"autoencoder: reusing {vaeFile}");
        }
        else
        {
            vae = TrainAutoencoder(o, config.Vae, initial.Vae, work, log);
            SafetensorsWriter.Write(vaeFile, vae);
        }
        float scaling = LatentScale(o, config.Vae, vae);
        config = config with { Vae = config.Vae with { ScalingFactor = scaling } };
        log($"autoencoder: latent scaling factor {scaling:G4} (1 / std of the posterior means over 256 scenes)");

        // The base folder the UNet trains in: seeded UNet and text encoder, the trained VAE.
        string baseDir = Path.Combine(work, "base");
        if (Directory.Exists(baseDir)) Directory.Delete(baseDir, true);
        OnnxModelFolder.Write(baseDir, new OnnxModelFolder.Contents(config, initial with { Vae = vae }, DType.F32, tokenizerDir, OnnxModelFolder.Sd15SchedulerConfig));

        AutoencoderCheck(o, baseDir, work, log);

        string scenes = Path.Combine(work, "scenes");
        WriteScenes(o, scenes, log);
        var unetResult = TrainUNet(o, baseDir, scenes, Path.Combine(work, "unet"), log);
        if (!unetResult.Completed || unetResult.WeightsPath == null) throw new CudaDreamException("pretraining of the UNet stopped before the end; run the same command again to resume");

        var weights = ModelExporter.ReplaceWeights(initial with { Vae = vae }, unetResult.WeightsPath);
        string partial = Path.GetFullPath(o.OutDir.TrimEnd('/', '\\')) + ".partial";
        if (Directory.Exists(partial)) Directory.Delete(partial, true);
        OnnxModelFolder.Write(partial, new OnnxModelFolder.Contents(config, weights, DType.F32, tokenizerDir, OnnxModelFolder.Sd15SchedulerConfig));
        if (Directory.Exists(o.OutDir))
            foreach (var sub in new[] { "text_encoder", "unet", "vae_encoder", "vae_decoder", "tokenizer", "scheduler" })
                if (Directory.Exists(Path.Combine(o.OutDir, sub))) Directory.Delete(Path.Combine(o.OutDir, sub), true);
        Directory.CreateDirectory(o.OutDir);
        foreach (var entry in Directory.EnumerateFileSystemEntries(partial))
        {
            string dest = Path.Combine(o.OutDir, Path.GetFileName(entry));
            if (Directory.Exists(entry)) Directory.Move(entry, dest);
            else File.Move(entry, dest, overwrite: true);
        }
        Directory.Delete(partial, true);
        log($"pretraining done in {clock.Elapsed:h\\:mm\\:ss}: {Path.GetFullPath(o.OutDir)} (last UNet loss {unetResult.LastLoss:F4})");
    }

    /// <summary>
    /// The quick start's style concept: <paramref name="count"/> toon-styled scenes (a look the UNet never saw) with their
    /// plain captions, as image_i.png + image_i.txt. Seeded apart from the pretraining scenes.
    /// </summary>
    public static void WriteStyleExamples(string dir, int count = 12, int size = 64, ulong seed = 424242)
    {
        Directory.CreateDirectory(dir);
        for (int i = 0; i < count; i++)
        {
            var scene = ShapeScenes.Draw(seed, i, size);
            string png = Path.Combine(dir, $"image_{i:D2}.png");
            AtomicFile.WriteAllText(Path.ChangeExtension(png, ".txt"), scene.Caption);
            PngFile.Write(png, ShapeScenes.Render(scene, size, SceneStyle.Toon));
        }
    }

    /// <summary>Scene i's image in [−1, 1], [3, S, S]; every fourth autoencoder scene is toon-styled.</summary>
    private static Tensor SceneTensor(ulong seed, long index, int size, SceneStyle style) =>
        ImageTensors.ToChw(ShapeScenes.Render(ShapeScenes.Draw(seed, index, size), size, style));

    private static Dictionary<string, Tensor> TrainAutoencoder(TinyPretrainOptions o, VaeConfig vc, IReadOnlyDictionary<string, Tensor> initial, string work, Action<string> log)
    {
        string path = Path.Combine(work, "autoencoder.onnx");
        VaeGraphs.BuildAutoencoder(vc, new DictionaryWeights(initial)).Save(path);
        var g = OnnxImporter.Load(path);
        int b = o.AutoencoderBatch, s = o.ImageSize;
        GraphPasses.Prepare(g, new Dictionary<string, int[]> { ["sample"] = [b, 3, s, s] }, fuse: true);
        var layers = TrainingNetworks.MatchLayers(g, ["*"]);
        var tg = TrainingGraph.Build(g, layers.Select(l => l.Weight).ToList());
        using var session = new TrainingSession(tg);
        var grads = tg.Parameters.ToDictionary(p => p, p => new float[p.Value.Numel]);
        var optimizer = new AdamW([new ParameterGroup("vae", tg.Parameters.Select(p => new OptimizerParameter(p.Name.Replace('/', '_'), p.Value.Constant!.Memory<float>(), grads[p])).ToList(),
            o.AutoencoderLearningRate)]);
        log($"autoencoder: {layers.Sum(l => l.Weight.Numel):N0} parameters, {o.AutoencoderSteps} steps of {b} scenes at {s}x{s}");
        var clock = Stopwatch.StartNew();
        double smoothed = double.NaN;
        var pixels = new float[b * 3 * s * s];
        for (int step = 0; step < o.AutoencoderSteps; step++)
        {
            for (int i = 0; i < b; i++)
            {
                long index = (long)step * b + i;
                var style = index % 4 == 3 ? SceneStyle.Toon : SceneStyle.Flat;
                SceneTensor(o.Seed + 1000, index, s, style).ReadOnlySpan<float>().CopyTo(pixels.AsSpan(i * 3 * s * s));
            }
            var x = Tensor.FromArray(pixels, b, 3, s, s);
            double warm = Math.Min(1.0, (step + 1) / 100.0), cosine = 0.5 * (1 + Math.Cos(Math.PI * step / o.AutoencoderSteps));
            optimizer.SetLearningRateMultiplier(warm * (0.05 + 0.95 * cosine));
            var r = session.Run(new Dictionary<string, Tensor> { ["sample"] = x, [TrainingGraph.TargetInput] = x });
            foreach (var p in tg.Parameters) session.Gradient(p).ReadOnlySpan<float>().CopyTo(grads[p]);
            GradientClipping.ClipByGlobalNorm(optimizer, 1.0);
            optimizer.Step();
            session.ParametersUpdated();
            smoothed = double.IsNaN(smoothed) ? r.Loss : 0.98 * smoothed + 0.02 * r.Loss;
            if ((step + 1) % 50 == 0 || step + 1 == o.AutoencoderSteps)
            {
                double rate = (step + 1) / clock.Elapsed.TotalSeconds;
                log($"autoencoder step {step + 1}/{o.AutoencoderSteps}  loss {smoothed:F5}  {rate:F2} it/s  ETA {TimeSpan.FromSeconds((o.AutoencoderSteps - step - 1) / rate):mm\\:ss}");
            }
        }
        var trained = new Dictionary<string, Tensor>(initial, StringComparer.Ordinal);
        foreach (var (weight, name, transposed) in layers)
        {
            var t = weight.Constant!.Clone();
            trained[name] = transposed ? Sampling.SamplerLoras.Transpose2D(t) : t;
        }
        // Trained on the posterior mean: the log-variance half of quant_conv is set to a near-deterministic posterior
        // (logvar −20, std 4.5e-5), so a sampled latent is the mean the decoder learned to read.
        int l = vc.LatentChannels;
        var qw = trained["quant_conv.weight"].ToFloat32Array();
        var qb = trained["quant_conv.bias"].ToFloat32Array();
        int perOut = qw.Length / (2 * l);
        for (int c = l; c < 2 * l; c++)
        {
            Array.Clear(qw, c * perOut, perOut);
            qb[c] = -20f;
        }
        trained["quant_conv.weight"] = Tensor.FromArray(qw, trained["quant_conv.weight"].Shape);
        trained["quant_conv.bias"] = Tensor.FromArray(qb, trained["quant_conv.bias"].Shape);
        return trained;
    }

    /// <summary>1 / std of the trained encoder's posterior means over 256 flat scenes: latents of unit variance, as SD's 0.18215 was chosen.</summary>
    private static float LatentScale(TinyPretrainOptions o, VaeConfig vc, IReadOnlyDictionary<string, Tensor> vae)
    {
        var encoder = VaeGraphs.BuildEncoder(vc, new DictionaryWeights(vae));
        string path = Path.Combine(Path.GetTempPath(), $"cudadream-encoder-{Environment.ProcessId}.onnx");
        encoder.Save(path);
        try
        {
            int n = 256, s = o.ImageSize;
            using var session = GraphSession.Create(path, new Dictionary<string, int[]> { ["sample"] = [n, 3, s, s] });
            var pixels = new float[n * 3 * s * s];
            for (int i = 0; i < n; i++) SceneTensor(o.Seed, i, s, SceneStyle.Flat).ReadOnlySpan<float>().CopyTo(pixels.AsSpan(i * 3 * s * s));
            var moments = session.Run(new Dictionary<string, Tensor> { ["sample"] = Tensor.FromArray(pixels, n, 3, s, s) })["moments"].ToFloat32Array();
            int l = vc.LatentChannels, plane = moments.Length / (n * 2 * l);
            double sum = 0, sq = 0;
            long count = 0;
            for (int i = 0; i < n; i++)
                for (int c = 0; c < l; c++)
                    for (int p = 0; p < plane; p++)
                    {
                        double v = moments[(i * 2 * l + c) * plane + p];
                        sum += v; sq += v * v; count++;
                    }
            double mean = sum / count, std = Math.Sqrt(Math.Max(1e-12, sq / count - mean * mean));
            return (float)(1 / std);
        }
        finally
        {
            File.Delete(path);
        }
    }

    /// <summary>
    /// How well the folder's VAE (encoder graph → posterior mean → decoder graph) keeps held-out scenes, flat and toon:
    /// RMSE in 8-bit levels and the toon outline's dark-pixel fraction before and after; a grid (originals above,
    /// reconstructions below) in the work folder.
    /// </summary>
    private static void AutoencoderCheck(TinyPretrainOptions o, string modelDir, string work, Action<string> log)
    {
        int n = 8, s = o.ImageSize, l = 4;
        var folder = ModelFolder.Open(modelDir);
        using var encoder = GraphSession.Create(folder.ModelPath(ModelFolder.VaeEncoder), new Dictionary<string, int[]> { ["sample"] = [n, 3, s, s] });
        using var decoder = GraphSession.Create(folder.ModelPath(ModelFolder.VaeDecoder), new Dictionary<string, int[]> { ["latent_sample"] = [n, l, s / 8, s / 8] });
        var grid = new List<RgbImage>();
        foreach (var style in new[] { SceneStyle.Flat, SceneStyle.Toon })
        {
            var originals = Enumerable.Range(0, n).Select(i => ShapeScenes.Render(ShapeScenes.Draw(o.Seed + 77, i, s), s, style)).ToList();
            var pixels = new float[n * 3 * s * s];
            for (int i = 0; i < n; i++) ImageTensors.ToChw(originals[i]).ReadOnlySpan<float>().CopyTo(pixels.AsSpan(i * 3 * s * s));
            var moments = encoder.Run(new Dictionary<string, Tensor> { ["sample"] = Tensor.FromArray(pixels, n, 3, s, s) })["moments"].ToFloat32Array();
            int plane = (s / 8) * (s / 8);
            var mean = new float[n * l * plane];
            for (int i = 0; i < n; i++) Array.Copy(moments, i * 2 * l * plane, mean, i * l * plane, l * plane);
            var decoded = decoder.Run(new Dictionary<string, Tensor> { ["latent_sample"] = Tensor.FromArray(mean, n, l, s / 8, s / 8) })["sample"];
            var rebuilt = ImageTensors.FromTensor(decoded, PixelRange.MinusOneToOne, PixelLayout.Chw);
            double se = 0;
            for (int i = 0; i < n; i++)
                for (int k = 0; k < originals[i].Rgb.Length; k++) { double d = originals[i].Rgb[k] - rebuilt[i].Rgb[k]; se += d * d; }
            double rmse = Math.Sqrt(se / (n * 3.0 * s * s));
            log($"autoencoder check ({style}): RMSE {rmse:F1} of 255; dark outline pixels {originals.Average(SceneJudge.DarkFraction):P1} → {rebuilt.Average(SceneJudge.DarkFraction):P1}");
            grid.AddRange(originals);
            grid.AddRange(rebuilt);
        }
        PngFile.Write(Path.Combine(work, "autoencoder-check.png"), ImageGrid.Compose(grid.Select(i => ImageGrid.Enlarge(i, 2)).ToList(), n,
            ["flat scenes", "reconstructed", "toon scenes", "reconstructed"]));
    }

    /// <summary>The UNet's training set: scene i as scene_i.png with its caption beside it (kohya's layout), written once.</summary>
    private static void WriteScenes(TinyPretrainOptions o, string dir, Action<string> log)
    {
        Directory.CreateDirectory(dir);
        int written = 0;
        for (int i = 0; i < o.Scenes; i++)
        {
            string png = Path.Combine(dir, $"scene_{i:D5}.png");
            if (File.Exists(png)) continue;
            var scene = ShapeScenes.Draw(o.Seed, i, o.ImageSize);
            AtomicFile.WriteAllText(Path.ChangeExtension(png, ".txt"), scene.Caption);
            PngFile.Write(png, ShapeScenes.Render(scene, o.ImageSize));
            written++;
        }
        if (written > 0) log($"scenes: wrote {written} captioned images to {dir}");
    }

    private static TrainingResult TrainUNet(TinyPretrainOptions o, string baseDir, string scenes, string outDir, Action<string> log)
    {
        var options = new DreamBoothOptions
        {
            Model = baseDir, OutputDir = outDir, Name = "unet",
            Concepts = [new ConceptOptions { InstanceDataDir = scenes, InstancePrompt = "[filewords]", NSaveSample = 1, SaveSamplePrompt = "a red circle on a blue background", SaveInferSteps = 20, SaveGuidanceScale = 4 }],
            Resolution = $"{o.ImageSize}", TrainBatchSize = o.UNetBatch, MaxTrainSteps = o.UNetSteps, LearningRate = o.UNetLearningRate,
            LrScheduler = "cosine", LrWarmupSteps = Math.Min(200, o.UNetSteps / 10), AdamWeightDecay = 0, MaxGradNorm = 1.0,
            TrainLayers = ["*"], LoraTargets = [], Seed = (long)o.Seed, CheckpointEveryNSteps = 500, CheckpointsToKeep = 1,
            EvalEveryNSteps = 250, SampleEveryNSteps = 0, Backend = "cpu", SampleEngine = "cudadream", CenterCrop = true,
            // One example in ten with the empty prompt: the unconditional prediction classifier-free guidance needs.
            CaptionDropoutRate = 0.1,
        };
        // A killed pretraining run resumes from the trainer's last checkpoint.
        if (Directory.Exists(Path.Combine(outDir, "checkpoints"))) options = options with { Resume = true };
        var progress = new SynchronousProgress<TrainingProgress>(p =>
        {
            if (p.Message != null) log(p.Message);
            else if (p.Phase == "training" && (p.Step % 50 == 0 || p.Step == p.Total))
                log($"unet step {p.Step}/{p.Total}  loss {p.SmoothedLoss:F4}  {p.StepsPerSecond:F2} it/s  ETA {p.Eta:hh\\:mm\\:ss}" + (p.EvalLoss is double e ? $"  eval {e:F4}" : ""));
        });
        return new DreamBoothTrainer(options).Run(progress);
    }

    private sealed class SynchronousProgress<T>(Action<T> report) : IProgress<T>
    {
        public void Report(T value) => report(value);
    }
}
