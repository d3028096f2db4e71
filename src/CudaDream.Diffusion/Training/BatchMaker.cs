using CudaDream.Diffusion.Images;
using CudaDream.Diffusion.Models;
using CudaDream.Diffusion.Tokenizers;
using CudaDream.Engine.Randomness;
using CudaDream.Engine.Tensors;
using CudaDream.Engine.Training;

namespace CudaDream.Diffusion.Training;

/// <summary>The inputs of one micro-step: the UNet feed and, for text-encoder training, the prompts' token ids.</summary>
public sealed record TrainingBatch(Dictionary<string, Tensor> UNet, Tensor InputIds, float[] Weights)
{
    /// <summary>The latent grid (height, width) of the batch: which bucket's graph runs it.</summary>
    public (int Height, int Width) LatentShape => (UNet["sample"].Shape[2], UNet["sample"].Shape[3]);
}

/// <summary>
/// Builds the batch of micro-step m as a pure function of (seed, m): the data order of each epoch is a
/// permutation keyed by (seed, epoch), and crops, flips, captions, timesteps and noise are keyed by (seed, example
/// position or step). Instance and class examples share a batch: the first B rows are instance examples,
/// the next B their paired class examples. What the rows train on — noise, timesteps, noisy latents, targets and
/// loss weights — is the <see cref="DiffusionObjective"/>'s; this class only assembles batches.
/// <para>
/// With aspect-ratio buckets (<see cref="AspectBuckets"/>) every image has its bucket; an epoch is the list of each
/// bucket's examples in a seeded order cut into batches of B (a last short batch is filled from the start of its
/// bucket), visited in a seeded order, so a batch never mixes sizes. A batch's class rows come from class images of
/// the same bucket (their concept's first), else from the concept's class images resized and cropped to the bucket.
/// </para>
/// </summary>
public sealed class BatchMaker
{
    private readonly DreamBoothOptions _o;
    private readonly TrainingData _data;
    private readonly ModelFolder _model;
    private readonly ClipTokenizer _tokenizer;
    private readonly TrainingCache _cache;
    private readonly DiffusionObjective _objective;
    private readonly CaptionOptions _captions;
    private readonly int _width, _height;
    private readonly Dictionary<long, int[]> _orders = new();
    private readonly Dictionary<string, int[]> _ids = new(StringComparer.Ordinal);

    // Buckets (null without enable_bucket).
    private readonly BucketOptions? _bucketOptions;
    private readonly Dictionary<string, BucketFit> _fits = new(StringComparer.Ordinal);
    private readonly List<Bucket> _buckets = new();
    private readonly List<List<int>> _epochIndicesByBucket = new();
    private readonly Dictionary<long, List<(int Bucket, int[] Indices)>> _epochBatches = new();

    private readonly record struct Row(TrainingImage Image, ImageGeometry Geometry, string Prompt);

    public int PhysicalBatch { get; }
    public int LatentChannels => _model.LatentChannels;
    public int LatentHeight => _height / _model.VaeScaleFactor;
    public int LatentWidth => _width / _model.VaeScaleFactor;
    /// <summary>Micro-steps in an epoch: every instance example once (more with buckets, whose last batches are filled up).</summary>
    public long MicroStepsPerEpoch { get; }
    public bool Bucketed => _bucketOptions != null;

    public BatchMaker(DreamBoothOptions o, TrainingData data, ModelFolder model, ClipTokenizer tokenizer, TrainingCache cache, int width, int height, string prediction)
    {
        _o = o;
        _data = data;
        _model = model;
        _tokenizer = tokenizer;
        _cache = cache;
        _width = width;
        _height = height;
        _captions = CaptionOptions.From(o);
        _objective = new DiffusionObjective(model.SchedulerConfig with { PredictionType = prediction }, o.NoiseOffset, o.MinSnrGamma, o.PriorLossWeight);
        PhysicalBatch = o.TrainBatchSize * (data.PriorPreservation ? 2 : 1);
        MicroStepsPerEpoch = (data.EpochSize + o.TrainBatchSize - 1) / o.TrainBatchSize;
        if (o.EnableBucket)
        {
            _bucketOptions = new BucketOptions(width, height, o.MinBucketReso, o.MaxBucketReso, o.BucketResoSteps, o.BucketNoUpscale);
            var predefined = o.BucketNoUpscale ? new List<Bucket>() : AspectBuckets.Predefined(_bucketOptions);
            foreach (var image in AllImages().Concat(data.Validation))
                _fits[image.Path] = AspectBuckets.Select(_bucketOptions, predefined, image.Width, image.Height);
            _buckets.AddRange(_fits.Values.Select(f => f.Bucket).Distinct().OrderBy(b => b.Width).ThenBy(b => b.Height));
            foreach (var _ in _buckets) _epochIndicesByBucket.Add(new List<int>());
            for (int i = 0; i < data.EpochSize; i++) _epochIndicesByBucket[_buckets.IndexOf(Fit(data.InstanceAt(i)).Bucket)].Add(i);
            MicroStepsPerEpoch = _epochIndicesByBucket.Sum(l => (l.Count + o.TrainBatchSize - 1) / o.TrainBatchSize);
        }
    }

    private IEnumerable<TrainingImage> AllImages() => _data.Instances.SelectMany(i => i).Concat(_data.Classes.SelectMany(c => c));

    private BucketFit Fit(TrainingImage image) => _fits[image.Path];

    /// <summary>Every latent grid (height, width) a training, evaluation or validation batch can have.</summary>
    public IReadOnlyList<(int Height, int Width)> LatentShapes =>
        Bucketed ? _buckets.Select(b => (b.Height / _model.VaeScaleFactor, b.Width / _model.VaeScaleFactor)).ToList() : new[] { (LatentHeight, LatentWidth) };

    /// <summary>The buckets in use and how many instance, class and validation images each holds (printed at the start of a run).</summary>
    public IEnumerable<string> BucketSummary()
    {
        if (!Bucketed) yield break;
        var o = _bucketOptions!;
        yield return $"buckets ({(o.NoUpscale ? "no upscale" : "kohya's predefined list")}, about {o.Width}x{o.Height} pixels, sides {o.MinReso}..{o.MaxReso} in steps of {o.Steps}): {_buckets.Count} in use";
        foreach (var b in _buckets)
        {
            int instances = _data.Instances.SelectMany(i => i).Count(i => Fit(i).Bucket == b);
            int classes = _data.Classes.SelectMany(c => c).Count(i => Fit(i).Bucket == b);
            int validation = _data.Validation.Count(i => Fit(i).Bucket == b);
            yield return $"  bucket {b}: {instances} instance images" + (classes > 0 ? $", {classes} class images" : "") + (validation > 0 ? $", {validation} validation images" : "");
        }
    }

    /// <summary>Computes every latent (and mask) a center-cropped run will need, before training starts.</summary>
    public void Warm(Action<int, int> progress, CancellationToken cancellation)
    {
        var images = AllImages().Concat(_data.Validation).ToList();
        var flips = _o.RandomFlip ? new[] { false, true } : new[] { false };
        int total = _o.CenterCrop ? images.Count * flips.Length : 0, done = 0;
        if (_o.CenterCrop)
            foreach (var image in images)
                foreach (var flip in flips)
                {
                    cancellation.ThrowIfCancellationRequested();
                    var geometry = Geometry(image, new CropPlacement.Center(), flip);
                    _cache.Latent(image.Path, geometry);
                    if (_o.MaskedLoss && image.Mask is { } mask) CheckMask(image, _cache.Mask(image.Path, mask, geometry));
                    progress(++done, total);
                }
        if (!_o.TrainTextEncoder)
            foreach (var prompt in images.Select(i => i.Prompt).Distinct()) _cache.TextEmbedding(Ids(prompt));
    }

    private readonly HashSet<string> _emptyMaskWarned = new(StringComparer.Ordinal);
    public Action<string>? Warn { get; set; }

    private void CheckMask(TrainingImage image, Tensor mask)
    {
        if (mask.ReadOnlySpan<float>().IndexOfAnyExcept(0f) < 0 && _emptyMaskWarned.Add(image.Path))
            Warn?.Invoke($"warning: the mask of {image.Path} ({image.Mask!.Path}) is empty after resizing and cropping; that image adds nothing to the loss");
    }

    private int[] Ids(string prompt)
    {
        if (!_ids.TryGetValue(prompt, out var ids))
        {
            if (_ids.Count > 4096) _ids.Clear();
            _ids[prompt] = ids = _tokenizer.Encode(prompt).InputIds;
        }
        return ids;
    }

    private int[] Order(long epoch)
    {
        if (!_orders.TryGetValue(epoch, out var order))
        {
            if (_orders.Count > 4) _orders.Clear();
            _orders[epoch] = order = CounterRng.Permutation(_data.EpochSize, (ulong)_o.Seed, epoch, RandomPurpose.DataOrder);
        }
        return order;
    }

    /// <summary>An epoch's batches with buckets: (bucket, epoch indices of its B instance examples), in the epoch's order.</summary>
    private List<(int Bucket, int[] Indices)> EpochBatches(long epoch)
    {
        if (_epochBatches.TryGetValue(epoch, out var cached)) return cached;
        if (_epochBatches.Count > 4) _epochBatches.Clear();
        int b = _o.TrainBatchSize, nb = _buckets.Count;
        ulong seed = (ulong)_o.Seed;
        var batches = new List<(int, int[])>();
        for (int k = 0; k < nb; k++)
        {
            var members = _epochIndicesByBucket[k];
            if (members.Count == 0) continue;
            var perm = CounterRng.Permutation(members.Count, seed, epoch * nb + k, RandomPurpose.BucketOrder);
            for (int start = 0; start < members.Count; start += b)
                batches.Add((k, Enumerable.Range(0, b).Select(j => members[perm[(start + j) % members.Count]]).ToArray()));
        }
        var order = CounterRng.Permutation(batches.Count, seed, epoch, RandomPurpose.BucketBatchOrder);
        return _epochBatches[epoch] = order.Select(i => batches[i]).ToList();
    }

    private ImageGeometry Geometry(TrainingImage image, CropPlacement crop, bool flip, Bucket? into = null)
    {
        if (!Bucketed) return new CoverGeometry(_width, _height, crop, flip);
        var fit = Fit(image);
        if (into is { } bucket && bucket != fit.Bucket) fit = AspectBuckets.FitInto(bucket, image.Width, image.Height);
        return new BucketGeometry(fit.ResizedWidth, fit.ResizedHeight, fit.Bucket.Width, fit.Bucket.Height, crop, flip);
    }

    private (CropPlacement Crop, bool Flip) Augmentation(long position, int lane)
    {
        ulong seed = (ulong)_o.Seed;
        bool flip = _o.RandomFlip && CounterRng.Uniform(seed, position, RandomPurpose.Flip, lane) < 0.5f;
        CropPlacement crop = _o.CenterCrop ? new CropPlacement.Center()
            : new CropPlacement.Random(CounterRng.Uniform(seed, position, RandomPurpose.Crop, 2 * lane), CounterRng.Uniform(seed, position, RandomPurpose.Crop, 2 * lane + 1));
        return (crop, flip);
    }

    private Row InstanceRow(TrainingImage instance, long position, Bucket? bucket = null)
    {
        var (crop, flip) = Augmentation(position, 0);
        return new Row(instance, Geometry(instance, crop, flip, bucket), Captions.Augment(instance.Prompt, _captions, (ulong)_o.Seed, position));
    }

    private Row ClassRow(TrainingImage instance, long position, Bucket? bucket)
    {
        var image = bucket is { } b ? ClassInBucket(instance, position, b) : _data.ClassFor(instance, position)!;
        var (crop, flip) = Augmentation(position, 1);
        return new Row(image, Geometry(image, crop, flip, bucket), image.Prompt);
    }

    /// <summary>A class image for a bucketed batch: one of the bucket's (its concept's first), else the concept's (any concept's) brought to the bucket.</summary>
    private TrainingImage ClassInBucket(TrainingImage instance, long position, Bucket bucket)
    {
        var own = _data.Classes[instance.Concept];
        var pools = new[]
        {
            own.Where(c => Fit(c).Bucket == bucket).ToList(),
            _data.Classes.SelectMany(c => c).Where(c => Fit(c).Bucket == bucket).ToList(),
            own.ToList(),
            _data.Classes.SelectMany(c => c).ToList(),
        };
        var pool = pools.First(p => p.Count > 0);
        return pool[(int)(position % pool.Count)];
    }

    /// <summary>The batch of micro-step <paramref name="m"/>.</summary>
    public TrainingBatch Make(long m)
    {
        int b = _o.TrainBatchSize;
        var rows = new List<Row>();
        if (!Bucketed)
        {
            var instances = new List<TrainingImage>();
            for (int i = 0; i < b; i++)
            {
                long position = m * b + i;
                var instance = _data.InstanceAt(Order(position / _data.EpochSize)[(int)(position % _data.EpochSize)]);
                instances.Add(instance);
                rows.Add(InstanceRow(instance, position));
            }
            if (_data.PriorPreservation)
                for (int i = 0; i < b; i++) rows.Add(ClassRow(instances[i], m * b + i, null));
        }
        else
        {
            var (bucketIndex, indices) = EpochBatches(m / MicroStepsPerEpoch)[(int)(m % MicroStepsPerEpoch)];
            var bucket = _buckets[bucketIndex];
            for (int i = 0; i < b; i++) rows.Add(InstanceRow(_data.InstanceAt(indices[i]), m * b + i));
            if (_data.PriorPreservation)
                for (int i = 0; i < b; i++) rows.Add(ClassRow(_data.InstanceAt(indices[i]), m * b + i, bucket));
        }
        return Assemble(rows, (ulong)_o.Seed, m, RandomPurpose.Noise, RandomPurpose.Timestep);
    }

    /// <summary>
    /// A fixed set of (example, timestep, noise) triples drawn once from the EvalSet stream: the loss on it shows
    /// learning without the noise of the training loss. Evaluated in batches of the physical batch size (per bucket).
    /// </summary>
    public List<TrainingBatch> EvalSet()
    {
        var rows = Enumerable.Range(0, _o.EvalExamples).Select(i => _data.InstanceAt(i % _data.EpochSize))
            .Select(image => new Row(image, Geometry(image, new CropPlacement.Center(), false), image.Prompt)).ToList();
        return FixedBatches(rows, (batch, step) => Assemble(batch, (ulong)_o.Seed, step, RandomPurpose.EvalSet, RandomPurpose.EvalSet, evaluation: true));
    }

    /// <summary>
    /// The validation set: every validation image (centre crop, no flip, its own prompt) at each of the objective's fixed
    /// validation timesteps, with noise fixed by (seed, position) from the ValidationNoise stream. Empty without validation images.
    /// </summary>
    public List<TrainingBatch> ValidationSet()
    {
        var timesteps = _objective.ValidationTimesteps();
        var rows = new List<(Row Row, int Timestep)>();
        foreach (var image in _data.Validation)
            foreach (var t in timesteps) rows.Add((new Row(image, Geometry(image, new CropPlacement.Center(), false), image.Prompt), t));
        var byRow = rows.Select(r => r.Row).ToList();
        var times = rows.Select(r => r.Timestep).ToList();
        int cursor = 0;
        // FixedBatches keeps the order within a shape group, so the timesteps are taken in the same order per group.
        var groups = byRow.Select((r, i) => (r, i)).GroupBy(x => (x.r.Geometry.Width, x.r.Geometry.Height)).ToList();
        var result = new List<TrainingBatch>();
        foreach (var group in groups)
        {
            var members = group.ToList();
            for (int start = 0; start < members.Count; start += PhysicalBatch)
            {
                var chunk = Enumerable.Range(0, PhysicalBatch).Select(j => members[Math.Min(start + j, members.Count - 1)]).ToList();
                var batch = Assemble(chunk.Select(c => c.r).ToList(), (ulong)_o.Seed, cursor++, RandomPurpose.ValidationNoise, RandomPurpose.ValidationNoise,
                    evaluation: true, fixedTimesteps: chunk.Select(c => times[c.i]).ToArray());
                for (int j = 0; j < PhysicalBatch; j++) batch.Weights[j] = start + j < members.Count ? 1 : 0;
                result.Add(batch);
            }
        }
        return result;
    }

    /// <summary>Rows grouped by size and cut into physical batches; rows past a group's end repeat its last one with weight 0.</summary>
    private List<TrainingBatch> FixedBatches(List<Row> rows, Func<List<Row>, long, TrainingBatch> assemble)
    {
        var result = new List<TrainingBatch>();
        long step = 0;
        foreach (var group in rows.GroupBy(r => (r.Geometry.Width, r.Geometry.Height)))
        {
            var members = group.ToList();
            for (int start = 0; start < members.Count; start += PhysicalBatch, step += PhysicalBatch)
            {
                var chunk = Enumerable.Range(0, PhysicalBatch)
                    .Select(j => start + j < members.Count ? members[start + j] : Bucketed ? members[^1] : members[(start + j) % members.Count]).ToList();
                if (!Bucketed)
                    // The unbucketed evaluation set pads with the next examples of the epoch order, as it always did.
                    chunk = Enumerable.Range(0, PhysicalBatch).Select(j => start + j < members.Count ? members[start + j]
                        : new Row(_data.InstanceAt((start + j) % _data.EpochSize), members[0].Geometry, _data.InstanceAt((start + j) % _data.EpochSize).Prompt)).ToList();
                var batch = assemble(chunk, step);
                for (int i = 0; i < PhysicalBatch; i++) batch.Weights[i] = start + i < members.Count ? 1 : 0;
                result.Add(batch);
            }
        }
        return result;
    }

    private TrainingBatch Assemble(List<Row> rows, ulong seed, long step, RandomPurpose noisePurpose, RandomPurpose timePurpose, bool evaluation = false,
        int[]? fixedTimesteps = null)
    {
        int p = rows.Count, c = LatentChannels, f = _model.VaeScaleFactor;
        int h = rows[0].Geometry.Height / f, w = rows[0].Geometry.Width / f, per = c * h * w;
        var x0 = new float[p * per];
        for (int r = 0; r < p; r++) _cache.Latent(rows[r].Image.Path, rows[r].Geometry).ReadOnlySpan<float>().CopyTo(x0.AsSpan(r * per, per));

        // The eval stream keeps timesteps and noise apart by element offset.
        long timeBase = evaluation ? (long)p * per + 1_000_000 : 0;
        var isClass = _data.PriorPreservation && !evaluation ? rows.Select(r => r.Image.IsClass).ToArray() : null;
        var draw = _objective.Draw(x0, p, c, h * w, seed, step, noisePurpose, timePurpose, timeBase, isClass, evaluation, fixedTimesteps);

        var idRows = rows.Select(r => Ids(r.Prompt)).ToList();
        int seqLen = idRows[0].Length;
        var ids = new int[p * seqLen];
        for (int r = 0; r < p; r++) idRows[r].CopyTo(ids, r * seqLen);
        var feed = new Dictionary<string, Tensor>
        {
            ["sample"] = Tensor.FromArray(draw.Noisy, p, c, h, w),
            ["timestep"] = Tensor.FromArray(draw.Timesteps.Select(t => (float)t).ToArray(), p),
            [TrainingGraph.TargetInput] = Tensor.FromArray(draw.Target, p, c, h, w),
        };
        if (_o.MaskedLoss)
        {
            var masks = new float[p * h * w];
            for (int r = 0; r < p; r++)
            {
                var span = masks.AsSpan(r * h * w, h * w);
                if (rows[r].Image.Mask is { } source && !rows[r].Image.IsClass)
                {
                    var mask = _cache.Mask(rows[r].Image.Path, source, rows[r].Geometry);
                    CheckMask(rows[r].Image, mask);
                    mask.ReadOnlySpan<float>().CopyTo(span);
                }
                else span.Fill(1f);
            }
            var (element, factor) = DiffusionObjective.MaskedLoss(masks, p, c, h * w);
            feed[TrainingGraph.LossMaskInput] = Tensor.FromArray(element, p, c, h, w);
            for (int r = 0; r < p; r++) draw.Weights[r] *= factor[r];
        }
        feed[TrainingGraph.WeightsInput] = Tensor.FromArray(draw.Weights, p);
        if (!_o.TrainTextEncoder)
        {
            var embeddings = rows.Select((r, i) => _cache.TextEmbedding(idRows[i], persist: r.Prompt == r.Image.Prompt)).ToList();
            int d = embeddings[0].Shape[1];
            var hidden = new float[p * seqLen * d];
            for (int r = 0; r < p; r++) embeddings[r].ReadOnlySpan<float>().CopyTo(hidden.AsSpan(r * seqLen * d, seqLen * d));
            feed["encoder_hidden_states"] = Tensor.FromArray(hidden, p, seqLen, d);
        }
        return new TrainingBatch(feed, Tensor.FromArray(ids, p, seqLen), draw.Weights);
    }

    /// <summary>The first instance image of a concept (its caption names the sample prompt by default).</summary>
    public string FirstImage(int concept) => _data.Instances[concept][0].Path;
}
