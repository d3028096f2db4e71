using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using CudaDream.Diffusion.Images;
using CudaDream.Diffusion.Models;
using CudaDream.Diffusion.Sampling;
using CudaDream.Diffusion.Schedulers;
using CudaDream.Diffusion.Tokenizers;
using CudaDream.Engine;
using CudaDream.Engine.Formats;
using CudaDream.Engine.Backends.Device;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Ops;
using CudaDream.Engine.Randomness;
using CudaDream.Engine.Tensors;
using CudaDream.Engine.Training;
using CudaDream.Engine.Training.LearningRate;
using CudaDream.Engine.Training.Lora;
using CudaDream.Engine.Training.Optimizers;

namespace CudaDream.Diffusion.Training;

/// <summary>
/// DreamBooth (Ruiz et al. 2023) with LoRA (Hu et al. 2021) or selected-layer fine-tuning:
/// <c>new DreamBoothTrainer(options).Run(progress, cancellationToken)</c>. Prepares class images and caches,
/// builds the training graphs, then runs the loop — sample timesteps and noise, forward, loss, backward,
/// accumulate, clip, step, schedule — writing the loss log, sample grids, checkpoints and the LoRA.
/// Every random draw is keyed by (seed, step), so a resumed run continues bit for bit.
/// </summary>
public sealed class DreamBoothTrainer
{
    private readonly DreamBoothOptions _o;
    private readonly IReadOnlyList<string> _notices;

    public DreamBoothTrainer(DreamBoothOptions options, IReadOnlyList<string>? notices = null)
    {
        var problems = DreamBoothConfig.Validate(options);
        if (problems.Count > 0) throw new ConfigException(problems);
        _o = options;
        _notices = notices ?? Array.Empty<string>();
    }

    public TrainingResult Run(IProgress<TrainingProgress>? progress = null, CancellationToken cancellation = default)
    {
        void Say(string line) => progress?.Report(new TrainingProgress { Phase = "info", Message = line });
        foreach (var n in _notices) Say(n);

        // ---- everything that can be wrong is checked before anything is written ----
        var model = ModelFolder.Open(_o.Model);
        var (width, height) = ClassImages.Resolution(_o);
        CheckAgainstModel(model, width, height);
        var tokenizer = ClipTokenizer.FromFolder(model.TokenizerDir);
        foreach (var c in _o.Concepts.Where(c => c.InstanceToken.Length > 0))
        {
            var pieces = tokenizer.Pieces(c.InstanceToken);
            if (pieces.Count > 1) Say($"warning: the tokenizer splits the instance token '{c.InstanceToken}' into {pieces.Count} pieces: {string.Join(" ", pieces.Select(p => $"'{p}'"))}");
        }
        var backend = ChooseBackend(Say);
        var data = TrainingData.Scan(_o, Say);
        var prediction = _o.PredictionType ?? (model.SchedulerConfig.PredictionType == "v_prediction" ? "v_prediction" : "epsilon");
        var earlier = EarlierRun.Find(_o);
        if (earlier.Count > 0 && !_o.Resume && !_o.Overwrite)
            throw new CudaDreamException($"output_dir {_o.OutputDir}: holds an earlier run ({string.Join(", ", earlier.Take(3))}); continue it with --resume, replace it with --overwrite, or choose another output_dir");

        Directory.CreateDirectory(_o.OutputDir);
        if (_o.Overwrite) EarlierRun.Delete(_o, Say);
        AtomicFileJson(Path.Combine(_o.OutputDir, "config.json"), _o);
        for (int c = 0; c < data.Instances.Count; c++)
            Say($"concept {c}: {data.Instances[c].Count} images, repeated {data.Repeats[c]}× per epoch");

        // ---- class images, caches ----
        var sampleEngine = EngineSelection.Parse(_o.SampleEngine);
        var classDirs = ClassImages.Prepare(_o, data, model, sampleEngine, Say,
            (phase, i, n) => progress?.Report(new TrainingProgress { Phase = phase, Step = i, Total = n }), cancellation);
        data = data.WithClassImages(classDirs, _o, Say);
        if (data.PriorPreservation) Say($"prior preservation: {data.Classes.Sum(c => c.Count)} class images, prior_loss_weight {_o.PriorLossWeight}");
        // Prompts past the text encoder's length train without their tail, as the sampler's prompts do: say which.
        foreach (var same in data.Instances.SelectMany(i => i).Concat(data.Classes.SelectMany(c => c)).GroupBy(i => i.Prompt))
            if (tokenizer.Encode(same.Key).TruncatedText is { } cut)
                Say($"warning: the prompt of {same.First().Path}{(same.Count() > 1 ? $" (and {same.Count() - 1} more images)" : "")} is longer than {tokenizer.MaxLength} tokens; trained without: {cut}");

        using var cache = new TrainingCache(_o.OutputDir, model, _o.ClipSkip, _o.LatentSampling == "sample", (ulong)_o.Seed);
        var batches = new BatchMaker(_o, data, model, tokenizer, cache, width, height, prediction) { Warn = Say };
        foreach (var line in batches.BucketSummary()) Say(line);
        if (data.Validation.Count > 0) Say($"validation: {data.Validation.Count} images ({(_o.ValidationDataDir.Length > 0 ? _o.ValidationDataDir : $"held out of the instance images, validation_split {_o.ValidationSplit}")}), loss every {_o.ValidationEveryNSteps} steps at fixed timesteps and noise");
        if (_o.MaskedLoss) Say($"masked loss: {data.Instances.SelectMany(i => i).Count(i => i.Mask != null)} of {data.Instances.Sum(i => i.Count)} instance images have a mask (.mask.png or alpha); the others count whole");
        batches.Warm((i, n) => progress?.Report(new TrainingProgress { Phase = "caching latents", Step = i, Total = n }), cancellation);
        // Augmented captions are new prompts at every step: the frozen text encoder keeps running for them.
        if (!_o.TrainTextEncoder && !CaptionOptions.From(_o).Varies) cache.ReleaseNetworks();
        Say($"cache: {cache.Hits} reused, {cache.Misses} computed");

        // ---- networks ----
        using var nets = TrainingNetworks.Build(_o, model, backend, batches.PhysicalBatch, batches.LatentShapes, Say);
        CheckMemory(nets, Say);
        nets.SamplerWeights(out var unsampled);
        if (unsampled.Count > 0) Say($"warning: sample grids show these tuned weights untrained (no initializer of the stored UNet holds them): {string.Join(", ", unsampled.Take(5))}{(unsampled.Count > 5 ? ", …" : "")}");
        var optimizer = MakeOptimizer(nets);
        Say(nets.UseDeviceUpdate(optimizer, Say));
        long adamWBytes = nets.TrainableCount * 2 * sizeof(float);
        Say($"optimizer: {_o.Optimizer}, state {optimizer.StateBytes / (1024.0 * 1024):F2} MiB ({(double)optimizer.StateBytes / Math.Max(1, adamWBytes):P0} of fp32 AdamW's {adamWBytes / (1024.0 * 1024):F2} MiB)" +
            (nets.Ema != null ? $"; EMA {nets.TrainableCount * sizeof(float) / (1024.0 * 1024):F2} MiB (decay {_o.EmaDecay})" : ""));
        if (_o.Optimizer == "prodigy" && _o.LearningRate < 0.1)
            Say($"warning: with prodigy, learning_rate multiplies the step size Prodigy estimates; {_o.LearningRate} makes it {1 / _o.LearningRate:G3}× smaller than usual (1.0 is the usual value)");
        // An epoch is one pass over the instance examples; the data stream runs on across epoch ends, so N epochs take
        // ⌈N · epoch size / examples per update⌉ updates (a per-epoch floor skipped data, e.g. 6 images at batch 4).
        long examplesPerUpdate = (long)_o.TrainBatchSize * _o.GradientAccumulationSteps;
        int totalUpdates = _o.MaxTrainSteps > 0 ? _o.MaxTrainSteps
            : batches.Bucketed ? (int)Math.Min(int.MaxValue, ((long)_o.NumTrainEpochs * batches.MicroStepsPerEpoch + _o.GradientAccumulationSteps - 1) / _o.GradientAccumulationSteps)
            : (int)Math.Min(int.MaxValue, ((long)_o.NumTrainEpochs * data.EpochSize + examplesPerUpdate - 1) / examplesPerUpdate);
        var schedule = new LrSchedule(new LrScheduleOptions(LrSchedule.ParseKind(_o.LrScheduler), _o.LrWarmupSteps, totalUpdates,
            _o.LrScheduler == "cosine_with_restarts" ? _o.LrNumCycles : null, _o.LrPower, 1e-7, _o.LearningRate));
        Say($"training: {totalUpdates} updates of {_o.TrainBatchSize}×{_o.GradientAccumulationSteps} examples ({(double)totalUpdates * examplesPerUpdate / data.EpochSize:F1} epochs), " +
            $"{nets.TrainableCount:N0} trainable parameters, {prediction} prediction");

        // ---- resume ----
        var checkpoints = new TrainingCheckpoints(_o.OutputDir, _o.CheckpointsToKeep);
        string configHash = ConfigHash();
        int start = 0;
        using var log = new LossLog(_o.OutputDir, _o.LogWith == "tensorboard" ? (_o.LoggingDir.Length > 0 ? _o.LoggingDir : Path.Combine(_o.OutputDir, "logs")) : null);
        if (log.TensorBoardFile != null) Say($"tensorboard: logging to {log.TensorBoardFile} (tensorboard --logdir {Path.GetDirectoryName(log.TensorBoardFile)})");
        if (_o.Resume && checkpoints.Latest() is { } latest)
        {
            var (state, parameters, optState, emaState) = checkpoints.Load(latest);
            if (state.ConfigHash != configHash)
                throw new CudaDreamException($"{latest}: the checkpoint was made with other training settings; resume needs the same configuration (or start a new output_dir)");
            nets.LoadParameters(parameters, latest);
            nets.ParametersUpdated();
            optimizer.Load(optState);
            if (nets.Scaler != null)
                nets.Scaler.Load(optState.TryGetValue(LossScaler.StateKey, out var scaler) ? scaler : throw new InvalidFileException(latest, $"the checkpoint has no '{LossScaler.StateKey}' (it was not an fp16 run)"), latest);
            if (nets.Ema != null)
                nets.Ema.Load(emaState ?? throw new InvalidFileException(latest, "the checkpoint has no EMA state (it was made without use_ema)"), Path.Combine(latest, TrainingCheckpoints.EmaFile));
            nets.StateLoaded();
            start = state.Update;
            log.TruncateAfter(start);
            Say($"resumed from {latest} at update {start}");
        }
        else log.Reset();

        // ---- the loop ----
        var evalSet = batches.EvalSet();
        var validationSet = batches.ValidationSet();
        var sw = Stopwatch.StartNew();
        double? smoothed = null;
        double? lastLoss = null;
        string? lastCheckpoint = null;
        // Updates applied to the parameters so far: what an interrupt's checkpoint must record, even when the stop
        // comes after an update, during its sample grid or outputs.
        int applied = start;
        bool completed = false;
        try
        {
            for (int update = start; update < totalUpdates; update++)
            {
                cancellation.ThrowIfCancellationRequested();
                RequireOutputDir();
                FaultInjection.At("step");
                double lrMultiplier = schedule.Multiplier(update);
                double loss = OneUpdate(nets, batches, optimizer, lrMultiplier, update, checkpoints);
                int done = applied = update + 1;
                lastLoss = loss;
                smoothed = smoothed == null ? loss : 0.9 * smoothed + 0.1 * loss;
                double? eval = (_o.EvalEveryNSteps > 0 && done % _o.EvalEveryNSteps == 0) || done == totalUpdates ? nets.Evaluate(evalSet) : null;
                double? validation = validationSet.Count > 0 && ((_o.ValidationEveryNSteps > 0 && done % _o.ValidationEveryNSteps == 0) || done == totalUpdates)
                    ? nets.Evaluate(validationSet) : null;
                log.Append(done, loss, _o.LearningRate * lrMultiplier, eval, validation);
                double rate = (done - start) / Math.Max(1e-9, sw.Elapsed.TotalSeconds);
                progress?.Report(new TrainingProgress
                {
                    Phase = "training", Step = done, Total = totalUpdates, Loss = loss, SmoothedLoss = smoothed, LearningRate = _o.LearningRate * lrMultiplier,
                    StepsPerSecond = rate, Eta = TimeSpan.FromSeconds((totalUpdates - done) / Math.Max(rate, 1e-9)), EvalLoss = eval, ValidationLoss = validation,
                });
                if (Due(_o.CheckpointEveryNSteps, done, totalUpdates))
                    lastCheckpoint = checkpoints.Save(new TrainerState(done, configHash, totalUpdates), nets.ParameterTensors(), OptimizerState(optimizer, nets), nets.EmaTensors());
                if (Due(_o.SaveEveryNSteps, done, totalUpdates))
                {
                    FaultInjection.At("lora-write");
                    var (stepLora, stepWeights) = WriteOutputs(nets, model, Path.Combine(_o.OutputDir, $"{_o.Name}-step{done:D6}"), done, totalUpdates);
                    foreach (var written in new[] { stepLora, stepWeights }.OfType<string>()) Say($"wrote {written}");
                }
                if (Due(_o.SampleEveryNSteps, done, totalUpdates) && SampleGrid(nets, batches, model, done, sampleEngine, cancellation) is { } grid)
                {
                    Say($"wrote {grid}");
                    log.Image("samples", done, grid);
                }
            }
            completed = true;
        }
        catch (CudaDreamException e) when (e is not TrainingStoppedException)
        {
            // A file that cannot be written, an image that vanished, a folder deleted: keep the updates done so far when
            // the disk still takes a checkpoint, and say where the run can continue from.
            throw Stopped(e, applied, configHash, totalUpdates, nets, optimizer, checkpoints, log);
        }
        catch (Exception e) when (WriteFailedException.IsFileSystemFailure(e))
        {
            throw Stopped(FileSystemFailure(e), applied, configHash, totalUpdates, nets, optimizer, checkpoints, log);
        }
        catch (OperationCanceledException)
        {
            // Ctrl-C: keep the work done so far, resumable with --resume.
            lastCheckpoint = checkpoints.Save(new TrainerState(applied, configHash, totalUpdates), nets.ParameterTensors(), OptimizerState(optimizer, nets), nets.EmaTensors());
            Say($"interrupted at update {applied}; wrote {lastCheckpoint} (continue with --resume)");
            log.WriteCurve();
            return new TrainingResult(_o.OutputDir, null, null, applied, false, lastLoss, log.Eval, lastCheckpoint);
        }

        string? lora, weights;
        try
        {
            lastCheckpoint = checkpoints.Save(new TrainerState(totalUpdates, configHash, totalUpdates), nets.ParameterTensors(), OptimizerState(optimizer, nets), nets.EmaTensors());
            FaultInjection.At("lora-write");
            (lora, weights) = WriteOutputs(nets, model, Path.Combine(_o.OutputDir, _o.Name), totalUpdates, totalUpdates);
            log.WriteCurve();
            foreach (var written in new[] { lora, weights }.OfType<string>()) Say($"wrote {written}");
            if (SampleGrid(nets, batches, model, totalUpdates, sampleEngine, cancellation) is { } finalGrid)
            {
                Say($"wrote {finalGrid}");
                log.Image("samples", totalUpdates, finalGrid);
            }
        }
        catch (CudaDreamException e) when (e is not TrainingStoppedException)
        {
            throw Stopped(e, totalUpdates, configHash, totalUpdates, nets, optimizer, checkpoints, log);
        }
        catch (Exception e) when (WriteFailedException.IsFileSystemFailure(e))
        {
            throw Stopped(FileSystemFailure(e), totalUpdates, configHash, totalUpdates, nets, optimizer, checkpoints, log);
        }
        return new TrainingResult(_o.OutputDir, lora, weights, totalUpdates, completed, lastLoss, log.Eval, lastCheckpoint);
    }

    /// <summary>
    /// One optimizer update: for each micro-step, the batch keyed by (seed, step) (timesteps, noise), forward, loss,
    /// backward, gradients accumulated; then clipping, the scheduled learning rate, the optimizer step. Returns the loss.
    /// </summary>
    private double OneUpdate(TrainingNetworks nets, BatchMaker batches, Optimizer optimizer, double lrMultiplier, int update, TrainingCheckpoints checkpoints)
    {
        if (nets.DeviceResident) return OneDeviceUpdate(nets, batches, optimizer, lrMultiplier, update, checkpoints);
        nets.ZeroGradients();
        double loss = 0;
        int micros = _o.GradientAccumulationSteps;
        for (int micro = 0; micro < micros; micro++)
        {
            long m = (long)update * micros + micro;
            double l = nets.Step(batches.Make(m), (ulong)_o.Seed, m, 1.0 / micros);
            if (!double.IsFinite(l))
                throw new TrainingStoppedException($"the loss became {l} at update {update + 1}; stopping. The last good checkpoint is {checkpoints.Latest() ?? "(none)"}; lower learning_rate or raise max_grad_norm clipping");
            loss += l / micros;
        }
        if (FaultInjection.NanGradientAt(update + 1))
            optimizer.Groups[0].Parameters[0].Grad.Span[0] = float.NaN;
        // fp16: gradients that overflowed under the loss scale skip this update and halve the scale (GradScaler).
        if (nets.Scaler != null && !nets.Scaler.Update(GradientNorm(optimizer).IsFinite)) return loss;
        // Without clipping the norm is still computed: a NaN gradient must stop the run before it reaches the weights
        // (and a later checkpoint), not one update later as a NaN loss.
        var clip = _o.MaxGradNorm > 0 ? GradientClipping.ClipByGlobalNorm(optimizer, _o.MaxGradNorm) : GradientNorm(optimizer);
        if (!clip.IsFinite)
            throw new TrainingStoppedException($"the gradient norm became {clip.TotalNorm} at update {update + 1}; stopping before it reaches the weights. The last good checkpoint is {checkpoints.Latest() ?? "(none)"}" +
                (checkpoints.Latest() != null ? " (continue with --resume, e.g. with a lower learning_rate or max_grad_norm clipping)" : ""));
        optimizer.SetLearningRateMultiplier(lrMultiplier);
        optimizer.Step();
        nets.ParametersUpdated();
        nets.Ema?.Update();
        return loss;
    }

    /// <summary>
    /// The same update kept on the device (<see cref="TrainingNetworks.UseDeviceUpdate"/>): the micro-steps' batches go in,
    /// the report comes back; the checks are the host path's, on the reported loss and norm.
    /// </summary>
    private double OneDeviceUpdate(TrainingNetworks nets, BatchMaker batches, Optimizer optimizer, double lrMultiplier, int update, TrainingCheckpoints checkpoints)
    {
        int micros = _o.GradientAccumulationSteps;
        var micro = Enumerable.Range(0, micros).Select(i => batches.Make((long)update * micros + i)).ToList();
        optimizer.SetLearningRateMultiplier(lrMultiplier);
        var r = nets.DeviceStep(micro, (ulong)_o.Seed, (long)update * micros, FaultInjection.NanGradientAt(update + 1));
        if (!double.IsFinite(r.Loss))
            throw new TrainingStoppedException($"the loss became {r.Loss} at update {update + 1}; stopping. The last good checkpoint is {checkpoints.Latest() ?? "(none)"}; lower learning_rate or raise max_grad_norm clipping");
        // fp16: an overflow skipped the update on the device and halved the scale; otherwise a NaN gradient stops the run
        // (the device left the weights untouched).
        if (!r.Applied && nets.Scaler == null)
            throw new TrainingStoppedException($"the gradient norm became {r.GradNorm} at update {update + 1}; stopping before it reaches the weights. The last good checkpoint is {checkpoints.Latest() ?? "(none)"}" +
                (checkpoints.Latest() != null ? " (continue with --resume, e.g. with a lower learning_rate or max_grad_norm clipping)" : ""));
        return r.Loss;
    }

    private static ClipResult GradientNorm(Optimizer optimizer)
    {
        double sumSquares = 0;
        foreach (var p in optimizer.Groups.SelectMany(g => g.Parameters))
            foreach (var x in p.Grad.Span) sumSquares += (double)x * x;
        double total = Math.Sqrt(sumSquares);
        return new ClipResult(total, 1.0, double.IsFinite(total));
    }

    /// <summary>A raw file-system failure mid-run (an input image deleted, a folder gone) as a user error naming the file.</summary>
    private static CudaDreamException FileSystemFailure(Exception e) => e switch
    {
        FileNotFoundException { FileName: { } f } => new CudaDreamException($"{f}: not found (deleted during the run?)", e),
        _ => new CudaDreamException(WriteFailedException.Reason(e) + (e is UnauthorizedAccessException ? "" : $" ({e.Message})"), e),
    };

    /// <summary>The output folder vanished (deleted, unmounted): stop before writing anything into a re-created empty one.</summary>
    private void RequireOutputDir()
    {
        if (!Directory.Exists(_o.OutputDir))
            throw new CudaDreamException($"output_dir {_o.OutputDir}: the folder disappeared during the run (deleted or unmounted)");
    }

    /// <summary>
    /// A run stopped by a user-side failure mid-training: writes a checkpoint of the <paramref name="applied"/> updates
    /// when the output folder still exists and takes it (a failed attempt leaves nothing behind), and returns the
    /// one-line error naming the failure and where to continue from.
    /// </summary>
    private TrainingStoppedException Stopped(CudaDreamException failure, int applied, string configHash, int totalUpdates, TrainingNetworks nets, Optimizer optimizer,
        TrainingCheckpoints checkpoints, LossLog log)
    {
        string? saved = null;
        bool vanished = !Directory.Exists(_o.OutputDir);
        if (!vanished && failure is not WriteFailedException)
            try { saved = checkpoints.Save(new TrainerState(applied, configHash, totalUpdates), nets.ParameterTensors(), OptimizerState(optimizer, nets), nets.EmaTensors()); }
            catch (CudaDreamException) { saved = null; }
        string where = saved != null ? $"wrote {saved}; continue with --resume once fixed"
            : vanished ? "no checkpoint is left (the output folder is gone); start again"
            : checkpoints.Latest() is { } latest ? $"the last good checkpoint is {latest}; continue with --resume once fixed"
            : "no checkpoint was written yet";
        return new TrainingStoppedException($"{failure.Message.Split('\n')[0]}; training stopped at update {applied}: {where}", failure);
    }

    /// <summary>
    /// The settings whose validity depends on the model (sizes, CLIP skip, what lora_targets or train_layers select),
    /// all listed at once before class images, caches or training: a mistake costs seconds, not a run.
    /// </summary>
    private void CheckAgainstModel(ModelFolder model, int width, int height)
    {
        var problems = new List<string>();
        void Check(Action check)
        {
            try { check(); }
            catch (CudaDreamException e) { problems.Add(e.Message); }
        }
        Check(() => model.RequireVaeEncoder("training (the images' latents)"));
        Check(() => model.CheckImageSize(width, height, $"resolution {width}x{height}"));
        if (_o.SampleResolution != null && DreamBoothConfig.TryParseResolution(_o.SampleResolution, out int sw, out int sh))
            Check(() => model.CheckImageSize(sw, sh, $"sample_resolution {sw}x{sh}"));
        if (_o.ClipSkip != 1) Check(() => model.TextEncoderGraph.ClipSkip(_o.ClipSkip));
        // Every bucket side is a multiple of the step: the step fitting the model makes every bucket fit it.
        if (_o.EnableBucket) Check(() => model.CheckImageSize(_o.BucketResoSteps, _o.BucketResoSteps, $"bucket_reso_steps {_o.BucketResoSteps}"));
        if (problems.Count == 0)
            Check(() => { if (TrainingNetworks.TargetProblem(_o, model, height / model.VaeScaleFactor, width / model.VaeScaleFactor) is { } p) problems.Add(p); });
        if (problems.Count > 0) throw new ConfigException(problems);
    }

    /// <summary>A periodic output is due after update <paramref name="done"/> (the final one is written after the loop).</summary>
    private static bool Due(int every, int done, int total) => every > 0 && done % every == 0 && done < total;

    /// <summary>
    /// auto: CUDA when the driver, a GPU and the CUDA libraries load, else the CPU, saying why in one line.
    /// cpu, emu (the CUDA kernels on the CPU emulator: slow, for checking), cuda[:N] force one.
    /// </summary>
    private ExecutionBackend ChooseBackend(Action<string> say)
    {
        if (_o.Backend != "auto")
        {
            var chosen = ExecutionBackend.Parse(_o.Backend);
            if (chosen.Kind != ExecutionBackend.BackendKind.Cpu) chosen.OpenDevice().Dispose(); // fail now, with the missing library named
            say($"backend: {chosen.Name} ({Precision(chosen)})");
            return chosen;
        }
        try
        {
            var cuda = ExecutionBackend.Parse("cuda");
            using (var device = cuda.OpenDevice()) say($"backend: cuda ({device.Name}, {Precision(cuda)})");
            return cuda;
        }
        catch (CudaDreamException e)
        {
            say($"backend: CPU (fp32{(_o.MixedPrecision != "no" ? $"; mixed_precision {_o.MixedPrecision} applies to kernel devices" : "")}) — CUDA not available: {e.Message}");
            return ExecutionBackend.Cpu;
        }
    }

    /// <summary>What a backend's run computes in: "fp32", or "bf16 mixed precision (fp32 master weights)".</summary>
    private string Precision(ExecutionBackend backend) => TrainingNetworks.ComputeType(_o, backend) switch
    {
        DType.F32 => "fp32",
        var t => $"{_o.MixedPrecision} mixed precision (fp32 master weights{(t == DType.F16 ? ", dynamic loss scaling" : "")})",
    };

    /// <summary>The optimizer's state and, in fp16, the loss scaler's (checkpoints hold both).</summary>
    private static IReadOnlyDictionary<string, Tensor> OptimizerState(Optimizer optimizer, TrainingNetworks nets)
    {
        nets.SyncHost();
        if (nets.Scaler == null) return optimizer.State();
        var state = new Dictionary<string, Tensor>(optimizer.State(), StringComparer.Ordinal) { [LossScaler.StateKey] = nets.Scaler.State() };
        return state;
    }

    private Optimizer MakeOptimizer(TrainingNetworks nets)
    {
        var groups = new List<ParameterGroup> { new("unet", nets.OptimizerParameters("unet"), _o.LearningRate, _o.AdamWeightDecay) };
        var te = nets.OptimizerParameters("text_encoder");
        if (te.Count > 0) groups.Add(new ParameterGroup("text_encoder", te, _o.TextEncoderLr ?? _o.LearningRate, _o.AdamWeightDecay));
        return _o.Optimizer switch
        {
            "sgd" => new Sgd(groups, new SgdOptions(_o.SgdMomentum)),
            "adamw8bit" => new AdamW8bit(groups, new AdamWOptions(_o.AdamBeta1, _o.AdamBeta2, _o.AdamEpsilon)),
            "lion" => new Lion(groups, new LionOptions(_o.LionBeta1, _o.LionBeta2)),
            "prodigy" => new Prodigy(groups, new ProdigyOptions(_o.AdamBeta1, _o.AdamBeta2, _o.AdamEpsilon, _o.ProdigyD0, _o.ProdigyDCoef, _o.ProdigyUseBiasCorrection, _o.ProdigySafeguardWarmup)),
            _ => new AdamW(groups, new AdamWOptions(_o.AdamBeta1, _o.AdamBeta2, _o.AdamEpsilon)),
        };
    }

    /// <summary>The planned step memory against what the machine has: stop before training with advice when it will not fit.</summary>
    private void CheckMemory(TrainingNetworks nets, Action<string> say)
    {
        long need = nets.PlannedBytes;
        long available = GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;
        say($"memory: the training step plans {need / (1024.0 * 1024):F1} MiB of activations, saved tensors and gradients ({available / (1024.0 * 1024 * 1024):F1} GiB available)");
        if (need > available * 0.9)
            throw new CudaDreamException($"the training step needs {need / (1024.0 * 1024 * 1024):F2} GiB but only {available / (1024.0 * 1024 * 1024):F2} GiB is available: " +
                (_o.GradientCheckpointing ? "" : "enable gradient_checkpointing, ") + "lower train_batch_size (use gradient_accumulation_steps instead) or the resolution");
    }

    /// <summary>The LoRA (kohya/A1111 keys, ss_* metadata) or, for selected-layer fine-tuning, the changed weights.</summary>
    private (string? lora, string? weights) WriteOutputs(TrainingNetworks nets, ModelFolder model, string basePath, int step, int total)
    {
        var meta = new Dictionary<string, string>
        {
            ["ss_sd_model_name"] = model.Name,
            ["ss_sd_model_hash"] = TrainingCache.FolderHash(Path.Combine(model.Root, ModelFolder.UNet))[..12],
            ["ss_learning_rate"] = _o.LearningRate.ToString(CultureInfo.InvariantCulture),
            ["ss_unet_lr"] = _o.LearningRate.ToString(CultureInfo.InvariantCulture),
            ["ss_text_encoder_lr"] = (_o.TextEncoderLr ?? _o.LearningRate).ToString(CultureInfo.InvariantCulture),
            ["ss_lr_scheduler"] = _o.LrScheduler,
            ["ss_max_train_steps"] = total.ToString(CultureInfo.InvariantCulture),
            ["ss_steps"] = step.ToString(CultureInfo.InvariantCulture),
            ["ss_resolution"] = $"({ClassImages.Resolution(_o).Width}, {ClassImages.Resolution(_o).Height})",
            ["ss_seed"] = _o.Seed.ToString(CultureInfo.InvariantCulture),
            ["ss_optimizer"] = _o.Optimizer,
            ["ss_prior_loss_weight"] = _o.PriorLossWeight.ToString(CultureInfo.InvariantCulture),
            ["ss_noise_offset"] = _o.NoiseOffset.ToString(CultureInfo.InvariantCulture),
            ["ss_min_snr_gamma"] = _o.MinSnrGamma.ToString(CultureInfo.InvariantCulture),
            ["ss_clip_skip"] = _o.ClipSkip.ToString(CultureInfo.InvariantCulture),
            ["ss_training_comment"] = "trained with CudaDream",
            ["ss_concept_tokens"] = string.Join(", ", _o.Concepts.Select(c => c.InstanceToken).Where(t => t.Length > 0)),
            ["ss_dataset_dirs"] = JsonSerializer.Serialize(_o.Concepts.Select(c => Path.GetFileName(c.InstanceDataDir))),
        };
        if (_o.UseEma) meta["ss_ema_decay"] = _o.EmaDecay.ToString(CultureInfo.InvariantCulture);
        var written = nets.WriteResult(basePath, meta, ema: _o.UseEma);
        if (_o.UseEma && _o.EmaSaveRaw)
        {
            var raw = new Dictionary<string, string>(meta) { ["ss_ema"] = "raw (not averaged)" };
            raw.Remove("ss_ema_decay");
            nets.WriteResult(basePath + "-raw", raw, ema: false);
        }
        return written;
    }

    /// <summary>Samples of every concept's prompt with the weights so far; one grid per step, rows = prompts. Null when no concept asks for samples.</summary>
    private string? SampleGrid(TrainingNetworks nets, BatchMaker batches, ModelFolder model, int step, SamplerEngine engine, CancellationToken cancellation)
    {
        if (_o.Concepts.All(c => c.NSaveSample == 0)) return null;
        var (width, height) = _o.SampleResolution != null && DreamBoothConfig.TryParseResolution(_o.SampleResolution, out var sw, out var sh) ? (sw, sh) : ClassImages.Resolution(_o);
        // On a GPU, CudaDream's engine samples in the training run's device context and precision (the frozen weights stay
        // resident once); on emu and the CPU it samples on the CPU (the emulator is for checking, not for speed).
        bool gpu = nets.Device is { } d && d.Name.StartsWith("cuda", StringComparison.Ordinal);
        using var sampler = Sampler.Create(model, new SamplerOptions
        {
            Engine = engine, Loras = nets.SamplerLoras(ema: _o.UseEma), Weights = nets.SamplerWeights(out _, ema: _o.UseEma),
            Backend = gpu ? ExecutionBackend.Parse(_o.Backend == "auto" ? "cuda" : _o.Backend) : ExecutionBackend.Cpu,
            Context = gpu ? nets.Context : null, Compute = gpu ? nets.Compute : DType.F32,
        });
        // The base model (no LoRA, no tuned layers) draws the same prompts and seeds in the row above, when asked.
        using var baseSampler = _o.SampleBaseRows ? Sampler.Create(model, new SamplerOptions
        {
            Engine = engine, Backend = gpu ? ExecutionBackend.Parse(_o.Backend == "auto" ? "cuda" : _o.Backend) : ExecutionBackend.Cpu,
            Context = gpu ? nets.Context : null, Compute = gpu ? nets.Compute : DType.F32,
        }) : null;
        var images = new List<RgbImage>();
        var labels = new List<string>();
        int columns = Math.Max(1, _o.Concepts.Max(c => c.NSaveSample));
        int scale = Math.Max(1, (_o.SampleCellSize + Math.Min(width, height) - 1) / Math.Min(width, height));
        void Row(Sampler s, ConceptOptions concept, string prompt, string label)
        {
            var result = s.Generate(new GenerationRequest
            {
                Prompt = prompt, NegativePrompt = concept.SaveSampleNegativePrompt, Steps = concept.SaveInferSteps, CfgScale = concept.SaveGuidanceScale,
                Scheduler = _o.SampleScheduler, Seed = concept.SampleSeed >= 0 ? concept.SampleSeed : _o.Seed, Width = width, Height = height,
                BatchSize = concept.NSaveSample, ClipSkip = _o.ClipSkip,
            }, cancellation: cancellation);
            images.AddRange(result.Images.Select(i => ImageGrid.Enlarge(i.Image, scale)));
            for (int k = result.Images.Count; k < columns; k++) images.Add(RgbImage.Filled(width * scale, height * scale, 255, 255, 255));
            labels.Add(label);
        }
        for (int c = 0; c < _o.Concepts.Count; c++)
        {
            var concept = _o.Concepts[c];
            if (concept.NSaveSample == 0) continue;
            var first = concept.SaveSamplePrompt.Length > 0 ? concept.SaveSamplePrompt : TrainingData.InstancePrompt(concept, TrainingData.Caption(batches.FirstImage(c)));
            foreach (var prompt in concept.SaveSamplePrompts.Prepend(first))
            {
                if (baseSampler != null) Row(baseSampler, concept, prompt, $"base model: {prompt}");
                Row(sampler, concept, prompt, baseSampler != null ? $"step {step}: {prompt}" : prompt);
            }
        }
        var path = Path.Combine(_o.OutputDir, "samples", $"step-{step:D6}.png");
        FaultInjection.At("sample-grid");
        PngFile.Write(path, ImageGrid.Compose(images, columns, labels), new[] { new KeyValuePair<string, string>("parameters", $"CudaDream samples at step {step}: {string.Join(" | ", labels)}") });
        return path;
    }

    /// <summary>Settings a resume must share with the run it continues (everything but intervals, resume and output names).</summary>
    private string ConfigHash()
    {
        var o = _o with { OutputDir = "", Name = "", Resume = false, Overwrite = false, SampleEveryNSteps = 0, SaveEveryNSteps = 0, CheckpointEveryNSteps = 0, CheckpointsToKeep = 1, EvalEveryNSteps = 0, Backend = "auto", SampleEngine = "auto", MaxTrainSteps = 0,
            ValidationEveryNSteps = 0, LogWith = "none", LoggingDir = "", EmaSaveRaw = false, SampleBaseRows = false, SampleCellSize = 128 };
        return Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(JsonSerializer.Serialize(o))))[..16];
    }

    private static void AtomicFileJson(string path, DreamBoothOptions o) =>
        Engine.Formats.AtomicFile.WriteAllText(path, JsonSerializer.Serialize(o, new JsonSerializerOptions { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower }));
}

/// <summary>Training stopped by a failure the user can act on, with where it can continue from already in the message.</summary>
public sealed class TrainingStoppedException : CudaDreamException
{
    public TrainingStoppedException(string message) : base(message) { }
    public TrainingStoppedException(string message, Exception inner) : base(message, inner) { }
}
