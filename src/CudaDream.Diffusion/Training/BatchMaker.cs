using CudaDream.Diffusion.Images;
using CudaDream.Diffusion.Models;
using CudaDream.Diffusion.Schedulers;
using CudaDream.Diffusion.Tokenizers;
using CudaDream.Engine.Randomness;
using CudaDream.Engine.Tensors;
using CudaDream.Engine.Training;

namespace CudaDream.Diffusion.Training;

/// <summary>The inputs of one micro-step: the UNet feed and, for text-encoder training, the prompts' token ids.</summary>
public sealed record TrainingBatch(Dictionary<string, Tensor> UNet, Tensor InputIds, float[] Weights);

/// <summary>
/// Builds the batch of micro-step m as a pure function of (seed, m): the data order of each epoch is a
/// permutation keyed by (seed, epoch), and crops, flips, timesteps and noise are keyed by (seed, example
/// position or step). Instance and class examples share a batch: the first B rows are instance examples,
/// the next B their paired class examples. What the rows train on — noise, timesteps, noisy latents, targets and
/// loss weights — is the <see cref="DiffusionObjective"/>'s; this class only assembles batches.
/// </summary>
public sealed class BatchMaker
{
    private readonly DreamBoothOptions _o;
    private readonly TrainingData _data;
    private readonly ModelFolder _model;
    private readonly ClipTokenizer _tokenizer;
    private readonly TrainingCache _cache;
    private readonly DiffusionObjective _objective;
    private readonly int _width, _height;
    private readonly Dictionary<long, int[]> _orders = new();
    private readonly Dictionary<string, int[]> _ids = new(StringComparer.Ordinal);

    public int PhysicalBatch { get; }
    public int LatentChannels => _model.LatentChannels;
    public int LatentHeight => _height / _model.VaeScaleFactor;
    public int LatentWidth => _width / _model.VaeScaleFactor;

    public BatchMaker(DreamBoothOptions o, TrainingData data, ModelFolder model, ClipTokenizer tokenizer, TrainingCache cache, int width, int height, string prediction)
    {
        _o = o;
        _data = data;
        _model = model;
        _tokenizer = tokenizer;
        _cache = cache;
        _width = width;
        _height = height;
        _objective = new DiffusionObjective(model.SchedulerConfig with { PredictionType = prediction }, o.NoiseOffset, o.MinSnrGamma, o.PriorLossWeight);
        PhysicalBatch = o.TrainBatchSize * (data.PriorPreservation ? 2 : 1);
    }

    /// <summary>Computes every latent and text embedding a center-cropped run will need, before training starts.</summary>
    public void Warm(Action<int, int> progress, CancellationToken cancellation)
    {
        var images = _data.Instances.SelectMany(i => i).Concat(_data.Classes.SelectMany(c => c)).ToList();
        var flips = _o.RandomFlip ? new[] { false, true } : new[] { false };
        int total = _o.CenterCrop ? images.Count * flips.Length : 0, done = 0;
        if (_o.CenterCrop)
            foreach (var image in images)
                foreach (var flip in flips)
                {
                    cancellation.ThrowIfCancellationRequested();
                    _cache.Latent(image.Path, _width, _height, new CropPlacement.Center(), flip);
                    progress(++done, total);
                }
        if (!_o.TrainTextEncoder)
            foreach (var prompt in images.Select(i => i.Prompt).Distinct()) _cache.TextEmbedding(Ids(prompt));
    }

    private int[] Ids(string prompt)
    {
        if (!_ids.TryGetValue(prompt, out var ids)) _ids[prompt] = ids = _tokenizer.Encode(prompt).InputIds;
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

    private (TrainingImage image, CropPlacement crop, bool flip) Example(long position, bool classExample)
    {
        long epoch = position / _data.EpochSize;
        var instance = _data.InstanceAt(Order(epoch)[(int)(position % _data.EpochSize)]);
        var image = classExample ? _data.ClassFor(instance, position)! : instance;
        ulong seed = (ulong)_o.Seed;
        int lane = classExample ? 1 : 0;
        bool flip = _o.RandomFlip && CounterRng.Uniform(seed, position, RandomPurpose.Flip, lane) < 0.5f;
        CropPlacement crop = _o.CenterCrop ? new CropPlacement.Center()
            : new CropPlacement.Random(CounterRng.Uniform(seed, position, RandomPurpose.Crop, 2 * lane), CounterRng.Uniform(seed, position, RandomPurpose.Crop, 2 * lane + 1));
        return (image, crop, flip);
    }

    /// <summary>The batch of micro-step <paramref name="m"/>.</summary>
    public TrainingBatch Make(long m)
    {
        int b = _o.TrainBatchSize;
        var rows = new List<(TrainingImage image, CropPlacement crop, bool flip)>();
        for (int i = 0; i < b; i++) rows.Add(Example(m * b + i, false));
        if (_data.PriorPreservation)
            for (int i = 0; i < b; i++) rows.Add(Example(m * b + i, true));
        return Assemble(rows, (ulong)_o.Seed, m, RandomPurpose.Noise, RandomPurpose.Timestep);
    }

    /// <summary>
    /// A fixed set of (example, timestep, noise) triples drawn once from the EvalSet stream: the loss on it shows
    /// learning without the noise of the training loss. Evaluated in batches of the physical batch size.
    /// </summary>
    public List<TrainingBatch> EvalSet()
    {
        var result = new List<TrainingBatch>();
        int count = _o.EvalExamples;
        for (int start = 0; start < count; start += PhysicalBatch)
        {
            var rows = new List<(TrainingImage, CropPlacement, bool)>();
            for (int i = 0; i < PhysicalBatch; i++)
            {
                var instance = _data.InstanceAt((start + i) % _data.EpochSize);
                rows.Add((instance, new CropPlacement.Center(), false));
            }
            var batch = Assemble(rows, (ulong)_o.Seed, start, RandomPurpose.EvalSet, RandomPurpose.EvalSet, evaluation: true);
            // Rows past the requested count repeat earlier examples with weight 0.
            for (int i = 0; i < PhysicalBatch; i++) batch.Weights[i] = start + i < count ? 1 : 0;
            result.Add(batch);
        }
        return result;
    }

    private TrainingBatch Assemble(List<(TrainingImage image, CropPlacement crop, bool flip)> rows, ulong seed, long step, RandomPurpose noisePurpose, RandomPurpose timePurpose, bool evaluation = false)
    {
        int p = rows.Count, c = LatentChannels, h = LatentHeight, w = LatentWidth, per = c * h * w;
        var x0 = new float[p * per];
        for (int r = 0; r < p; r++) _cache.Latent(rows[r].image.Path, _width, _height, rows[r].crop, rows[r].flip).ReadOnlySpan<float>().CopyTo(x0.AsSpan(r * per, per));

        // The eval stream keeps timesteps and noise apart by element offset.
        long timeBase = evaluation ? (long)p * per + 1_000_000 : 0;
        var isClass = _data.PriorPreservation && !evaluation ? rows.Select(r => r.image.IsClass).ToArray() : null;
        var draw = _objective.Draw(x0, p, c, h * w, seed, step, noisePurpose, timePurpose, timeBase, isClass, evaluation);

        var idRows = rows.Select(r => Ids(r.image.Prompt)).ToList();
        int seqLen = idRows[0].Length;
        var ids = new int[p * seqLen];
        for (int r = 0; r < p; r++) idRows[r].CopyTo(ids, r * seqLen);
        var feed = new Dictionary<string, Tensor>
        {
            ["sample"] = Tensor.FromArray(draw.Noisy, p, c, h, w),
            ["timestep"] = Tensor.FromArray(draw.Timesteps.Select(t => (float)t).ToArray(), p),
            [TrainingGraph.TargetInput] = Tensor.FromArray(draw.Target, p, c, h, w),
            [TrainingGraph.WeightsInput] = Tensor.FromArray(draw.Weights, p),
        };
        if (!_o.TrainTextEncoder)
        {
            var embeddings = idRows.Select(_cache.TextEmbedding).ToList();
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
