using CudaDream.Diffusion.Models;
using CudaDream.Diffusion.Sampling;
using CudaDream.Diffusion.Sampling.Engines;
using CudaDream.Engine;
using CudaDream.Engine.Backends;
using CudaDream.Engine.Backends.Cpu.Kernels;
using CudaDream.Engine.Backends.Device;
using CudaDream.Engine.Formats;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Ops;
using CudaDream.Engine.Tensors;
using CudaDream.Engine.Training;
using CudaDream.Engine.Training.Lora;
using CudaDream.Engine.Training.Optimizers;

namespace CudaDream.Diffusion.Training;

/// <summary>A trainable tensor: where the optimizer writes it (the graph constant), its gradient accumulator, its group and its name.</summary>
internal sealed record Trainable(string Name, string Group, Value Value, float[] Accumulated, TrainableParameter? TextParameter);

/// <summary>
/// The UNet of one latent size (one aspect-ratio bucket; a single one without buckets): its planned training step, whose
/// parameters (aligned with the UNet entries of the trainable list) read the shared buffers, and its evaluation forward.
/// </summary>
internal sealed record UNetStep(TrainingSession Session, IReadOnlyList<TrainableParameter> Parameters, IPlanExecutor Eval, Value EvalPrediction);

/// <summary>
/// The networks of a run in training form: the UNet step graph (forward, weighted MSE, backward) and an evaluation
/// forward for every latent size the run uses (one per aspect-ratio bucket), and — when the text encoder trains — a
/// text-encoder forward and a text-encoder step graph that backpropagates the UNet's gradient toward
/// <c>encoder_hidden_states</c>. LoRA adapters (or the selected layers) are the only trainable tensors; all networks
/// read the same buffers. With EMA, an fp32 moving average of those tensors is kept beside them and can stand in for
/// them in sample grids and the written result.
/// </summary>
internal sealed class TrainingNetworks : IDisposable
{
    private readonly List<Trainable> _params = new();
    private readonly List<AttachedLora> _unetLoras = new(), _textLoras = new();
    private readonly Dictionary<Value, string> _layerNames = new();
    private readonly Dictionary<(int Height, int Width), UNetStep> _unets = new();
    private TrainingSession? _text;
    private IPlanExecutor? _textForward;
    /// <summary>Per forward-only executor, its copies of the trainable values (same buffers) to upload after each update.</summary>
    private readonly List<(IPlanExecutor Executor, List<Value> Shared)> _sharers = new();
    private readonly ExecutionBackend _backend;
    private Value? _textHidden;
    private readonly ModelFolder _model;
    private readonly DreamBoothOptions _o;
    /// <summary>On kernel devices: the one device every executor of the run shares, with the weights resident once.</summary>
    private readonly DeviceContext? _context;
    private DeviceUpdate? _device;
    /// <summary>The device updated the trained tensors since the host copies were last brought back.</summary>
    private bool _hostStale;

    /// <summary>
    /// The element type activations and frozen weights are stored in: fp32, or bf16/fp16 with mixed_precision on a kernel
    /// device (the CPU is the fp32 oracle). Trainable tensors stay fp32 masters either way.
    /// </summary>
    public DType Compute { get; }

    /// <summary>fp16's dynamic loss scale (null in fp32 and bf16, whose range needs none).</summary>
    public LossScaler? Scaler { get; }

    public long PlannedBytes { get; private set; }
    public long TrainableCount => _params.Sum(p => (long)p.Accumulated.Length);
    /// <summary>The moving average of the trained tensors (null without use_ema).</summary>
    public ExponentialMovingAverage? Ema { get; private set; }

    private TrainingNetworks(DreamBoothOptions o, ModelFolder model, ExecutionBackend backend)
    {
        _o = o;
        _model = model;
        _backend = backend;
        Compute = ComputeType(o, backend);
        if (Compute == DType.F16) Scaler = new LossScaler();
    }

    private TrainingNetworks(DreamBoothOptions o, ModelFolder model, ExecutionBackend backend, DeviceContext? context) : this(o, model, backend) => _context = context;

    /// <summary>mixed_precision on a kernel device; fp32 on the CPU.</summary>
    public static DType ComputeType(DreamBoothOptions o, ExecutionBackend backend) =>
        backend.Kind == ExecutionBackend.BackendKind.Cpu ? DType.F32 : o.MixedPrecision switch { "bf16" => DType.BF16, "fp16" => DType.F16, _ => DType.F32 };

    private void ApplyPrecision(ComputeGraph g, IReadOnlyCollection<Value> masters)
    {
        if (Compute != DType.F32) MixedPrecision.Apply(g, Compute, masters);
    }

    public string BackendName => _unets.Values.FirstOrDefault()?.Session.BackendName ?? _backend.Name;

    public static TrainingNetworks Build(DreamBoothOptions o, ModelFolder model, ExecutionBackend backend, int batch, int latentHeight, int latentWidth, Action<string> say) =>
        Build(o, model, backend, batch, new[] { (latentHeight, latentWidth) }, say);

    /// <summary>Networks for every latent size in <paramref name="latentShapes"/> (the first defines the trainable tensors).</summary>
    public static TrainingNetworks Build(DreamBoothOptions o, ModelFolder model, ExecutionBackend backend, int batch, IReadOnlyList<(int Height, int Width)> latentShapes, Action<string> say)
    {
        var n = new TrainingNetworks(o, model, backend, backend.OpenContext());
        try
        {
            foreach (var (h, w) in latentShapes) n.BuildUNet(batch, h, w, say);
            if (o.TrainTextEncoder) n.BuildTextEncoder(batch, say);
            if (o.UseEma) n.Ema = new ExponentialMovingAverage(n._params.Select(p => (p.Name, p.Value.Constant!.Memory<float>())), o.EmaDecay);
            return n;
        }
        catch
        {
            n.Dispose();
            throw;
        }
    }

    private Dictionary<string, int[]> UNetShapes(int batch, int h, int w, int seq, int width) => new()
    {
        ["sample"] = new[] { batch, _model.LatentChannels, h, w },
        ["timestep"] = _model.UNetGraph.Input("timestep")!.Dims.Length == 0 ? Array.Empty<int>() : new[] { batch },
        ["encoder_hidden_states"] = new[] { batch, seq, width },
    };

    private (int seq, int width) TextShape()
    {
        var ehs = _model.UNetGraph.Input("encoder_hidden_states")!.Dims;
        int width = ehs[^1] > 0 ? ehs[^1] : throw new CudaDreamException($"{_model.ModelPath(ModelFolder.UNet)}: encoder_hidden_states has no fixed width");
        return (77, width);
    }

    private IEnumerable<Trainable> UNetParams => _params.Where(p => p.Group == "unet");

    /// <summary>
    /// The trainable values of another copy of the UNet graph, aligned with the UNet entries of <see cref="_params"/>
    /// and reading their buffers (no copy).
    /// </summary>
    private List<Value> ShareTrainables(ComputeGraph g)
    {
        if (_o.TrainLayers.Count == 0) return AttachShared(g, _unetLoras);
        var byName = MatchLayers(g, _o.TrainLayers).ToDictionary(m => m.Name, m => m.Weight);
        var shared = new List<Value>();
        foreach (var p in UNetParams)
        {
            var v = byName[p.Name["unet.".Length..]];
            v.Constant = p.Value.Constant;
            v.DType = DType.F32;
            shared.Add(v);
        }
        return shared;
    }

    private void BuildUNet(int batch, int h, int w, Action<string> say)
    {
        var (seq, width) = TextShape();
        var shapes = UNetShapes(batch, h, w, seq, width);
        var g = Load(ModelFolder.UNet, shapes);
        bool first = _unets.Count == 0;
        List<Value> trainable;
        if (!first) trainable = ShareTrainables(g);
        else if (_o.TrainLayers.Count > 0)
        {
            trainable = SelectLayers(g, _o.TrainLayers);
            say($"selected-layer fine-tuning: {trainable.Count} UNet tensors ({trainable.Sum(v => v.Numel):N0} parameters)");
        }
        else
        {
            var targets = LoraTargetSelector.Select(GraphLora.Targets(g, LoraComponents.UNet), _o.LoraTargets);
            if (targets.Count == 0) throw new CudaDreamException(NoLoraTargets());
            _unetLoras.AddRange(GraphLora.Attach(g, Initialize(targets, 0), (float)_o.LoraDropout));
            trainable = _unetLoras.SelectMany(a => new[] { a.Down, a.Up }).ToList();
            say($"LoRA: {_unetLoras.Count} UNet modules, rank {_o.LoraRank}, alpha {_o.LoraAlpha ?? _o.LoraRank}");
        }
        ApplyPrecision(g, trainable);
        var tg = TrainingGraph.Build(g, trainable, new TrainingGraphOptions
        {
            PerSampleWeights = true,
            LossMask = _o.MaskedLoss,
            InputGradients = _o.TrainTextEncoder ? new[] { "encoder_hidden_states" } : Array.Empty<string>(),
            GradientCheckpointing = _o.GradientCheckpointing,
            LossScale = Scaler != null,
        });
        var session = new TrainingSession(tg, _backend, _context);
        PlannedBytes += session.Plan.ArenaBytes;
        if (first)
            foreach (var p in tg.Parameters)
                _params.Add(new Trainable(ParamName("unet", p.Value), "unet", p.Value, new float[p.Value.Numel], null));

        // The evaluation forward: same graph without the loss and backward, sharing the parameter buffers.
        var eg = Load(ModelFolder.UNet, shapes);
        var shared = ShareTrainables(eg);
        ApplyPrecision(eg, shared);
        var eval = _backend.CreateExecutor(ExecutionPlan.Create(eg), context: _context);
        _sharers.Add((eval, shared));
        _unets[(h, w)] = new UNetStep(session, tg.Parameters, eval, eg.Outputs[0]);
    }

    private UNetStep UNetFor((int Height, int Width) shape) =>
        _unets.TryGetValue(shape, out var u) ? u : throw new InvalidOperationException($"no UNet was built for latents {shape.Height}x{shape.Width}");

    private void BuildTextEncoder(int batch, Action<string> say)
    {
        var shapes = new Dictionary<string, int[]> { ["input_ids"] = new[] { batch, 77 } };
        var targets = LoraTargetSelector.Select(GraphLora.Targets(LoadText(shapes, out _), LoraComponents.TextEncoder), new[] { "text" });
        var g = LoadText(shapes, out var hidden);
        _textLoras.AddRange(GraphLora.Attach(g, Initialize(targets, 1), (float)_o.LoraDropout));
        ApplyPrecision(g, _textLoras.SelectMany(a => new[] { a.Down, a.Up }).ToList());
        // Its upstream gradient comes from the UNet's backward, already multiplied by fp16's loss scale.
        var tg = TrainingGraph.Build(g, _textLoras.SelectMany(a => new[] { a.Down, a.Up }).ToList(),
            new TrainingGraphOptions { Prediction = hidden, UpstreamGradient = true, GradientCheckpointing = _o.GradientCheckpointing });
        _text = new TrainingSession(tg, _backend, _context);
        PlannedBytes += _text.Plan.ArenaBytes;
        foreach (var p in tg.Parameters)
            _params.Add(new Trainable(ParamName("text_encoder", p.Value), "text_encoder", p.Value, new float[p.Value.Numel], p));

        var fg = LoadText(shapes, out _);
        var shared = AttachShared(fg, _textLoras);
        ApplyPrecision(fg, shared);
        _textHidden = fg.Outputs[0];
        _textForward = _backend.CreateExecutor(ExecutionPlan.Create(fg), context: _context);
        _sharers.Add((_textForward, shared));
        say($"text encoder: LoRA on {_textLoras.Count} modules, lr {_o.TextEncoderLr ?? _o.LearningRate}");
    }

    /// <summary>Attaches the same adapters to another graph, reading the trained buffers (no copy), so it sees every update.</summary>
    private static List<Value> AttachShared(ComputeGraph g, List<AttachedLora> trained)
    {
        var attached = GraphLora.Attach(g, trained.Select(a => a.Adapter).ToList());
        for (int i = 0; i < attached.Count; i++)
        {
            attached[i].Down.Constant = trained[i].Down.Constant;
            attached[i].Up.Constant = trained[i].Up.Constant;
        }
        return attached.SelectMany(a => new[] { a.Down, a.Up }).ToList();
    }

    /// <summary>After the optimizer changed the host buffers: kernel devices upload them again (the CPU reads them in place).</summary>
    public void ParametersUpdated()
    {
        if (_context != null)
        {
            // One shared copy per tensor serves every executor.
            foreach (var p in _params) _context.Refresh(p.Value.Constant!);
            return;
        }
        foreach (var u in _unets.Values) u.Session.ParametersUpdated();
        _text?.ParametersUpdated();
        foreach (var (executor, shared) in _sharers)
            foreach (var v in shared) executor.UploadParameter(v);
    }

    /// <summary>The text encoder with CLIP skip applied, returning only its hidden states.</summary>
    private ComputeGraph LoadText(Dictionary<string, int[]> shapes, out string hidden)
    {
        var path = _model.ModelPath(ModelFolder.TextEncoder);
        var g = OnnxImporter.Load(path);
        if (_o.ClipSkip > 1) GraphPipelineEngine.Apply(g, new NetworkEdits(new Dictionary<string, Tensor>(), _model.TextEncoderGraph.ClipSkip(_o.ClipSkip)));
        var output = g.Outputs.FirstOrDefault(v => v.Name == "last_hidden_state") ?? g.Outputs[0];
        g.Outputs.Clear();
        g.Outputs.Add(output);
        hidden = output.Name;
        GraphPasses.Prepare(g, shapes, fuse: true);
        return g;
    }

    private ComputeGraph Load(string component, Dictionary<string, int[]> shapes)
    {
        var g = OnnxImporter.Load(_model.ModelPath(component));
        GraphPasses.Prepare(g, shapes, fuse: true);
        return g;
    }

    private List<LoraAdapter> Initialize(List<LoraTarget> targets, ulong stream) =>
        GraphLora.Initialize(targets, _o.LoraRank, (float)(_o.LoraAlpha ?? _o.LoraRank), (ulong)_o.Seed * 2 + stream, _o.LoraInit == "normal",
            _o.LoraConvRank, _o.LoraConvAlpha is double ca ? (float)ca : null);

    /// <summary>
    /// Weights whose diffusers name matches a glob. Torch exports name Linear weights by number, so a weight is
    /// known by the module path of the node that uses it (<c>&lt;module&gt;.weight</c>, <c>.bias</c>). Trainable
    /// weights get a writable fp32 copy (the model's own are memory-mapped).
    /// </summary>
    private List<Value> SelectLayers(ComputeGraph g, IReadOnlyList<string> globs)
    {
        var result = new List<Value>();
        foreach (var (v, name, transposed) in MatchLayers(g, globs))
        {
            v.Constant = v.Constant!.To(DType.F32).Clone();
            v.DType = DType.F32;
            // Torch exports keep Linear weights transposed; record it to write them back in [out, in].
            _layerNames[v] = transposed ? name + "#transposed" : name;
            result.Add(v);
        }
        if (result.Count == 0) throw new CudaDreamException(NoLayers());
        return result;
    }

    /// <summary>The weights <see cref="SelectLayers"/> would train, with their diffusers names; the graph is not changed.</summary>
    internal static List<(Value Weight, string Name, bool Transposed)> MatchLayers(ComputeGraph g, IReadOnlyList<string> globs)
    {
        var regexes = globs.Select(LoraTargetSelector.Glob).ToList();
        var result = new List<(Value, string, bool)>();
        var seen = new HashSet<Value>();
        foreach (var n in g.Nodes)
        {
            if (n.Op is not (MatMulOps.Linear or "Conv" or GroupNormOps.GroupNorm or LayerNormOps.LayerNorm) || n.Module.Length == 0) continue;
            for (int i = 1; i < Math.Min(3, n.Inputs.Count); i++)
            {
                var v = n.Inputs[i];
                if (v == null || !v.IsWeight || v.Constant == null || seen.Contains(v)) continue;
                var name = n.Module + (i == 1 ? ".weight" : ".bias");
                if (!regexes.Any(r => r.IsMatch(name))) continue;
                seen.Add(v);
                result.Add((v, name, n.Op == MatMulOps.Linear && i == 1 && n.Attributes.Int("transB", 0) == 0));
            }
        }
        return result;
    }

    private string NoLoraTargets() => $"lora_targets {string.Join(",", _o.LoraTargets)} match no module of {_model.ModelPath(ModelFolder.UNet)}";

    private string NoLayers() => $"train_layers {string.Join(",", _o.TrainLayers)} match no UNet weight (names are diffusers module paths, e.g. down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight)";

    /// <summary>
    /// Whether lora_targets (or train_layers) select anything in the model's UNet, found on the same prepared graph the
    /// run trains (at batch 1), so a run that would select nothing stops before class images and caches: null when fine.
    /// </summary>
    public static string? TargetProblem(DreamBoothOptions o, ModelFolder model, int latentHeight, int latentWidth)
    {
        var n = new TrainingNetworks(o, model, ExecutionBackend.Cpu);
        var (seq, width) = n.TextShape();
        var g = n.Load(ModelFolder.UNet, n.UNetShapes(1, latentHeight, latentWidth, seq, width));
        if (o.TrainLayers.Count > 0) return MatchLayers(g, o.TrainLayers).Count == 0 ? n.NoLayers() : null;
        return LoraTargetSelector.Select(GraphLora.Targets(g, LoraComponents.UNet), o.LoraTargets).Count == 0 ? n.NoLoraTargets() : null;
    }

    private string ParamName(string component, Value v) =>
        component + "." + (_layerNames.TryGetValue(v, out var n) ? n.Replace("#transposed", "") : v.Name);

    public IReadOnlyList<OptimizerParameter> OptimizerParameters(string group) =>
        _params.Where(p => p.Group == group).Select(p => new OptimizerParameter(p.Name, p.Value.Constant!.Memory<float>(), p.Accumulated)).ToList();

    public void ZeroGradients()
    {
        foreach (var p in _params) Array.Clear(p.Accumulated);
    }

    /// <summary>One micro-step: forward, loss, backward; the gradients, scaled, are added to the accumulators. Returns the loss.</summary>
    public double Step(TrainingBatch batch, ulong seed, long step, double scale)
    {
        var feed = batch.UNet;
        if (_textForward != null)
        {
            var hidden = _textForward.Run(new Dictionary<string, Tensor> { ["input_ids"] = batch.InputIds }, new[] { _textHidden! })[_textHidden!.Name];
            feed = new Dictionary<string, Tensor>(feed) { ["encoder_hidden_states"] = hidden };
        }
        if (Scaler != null)
        {
            feed = new Dictionary<string, Tensor>(feed) { [TrainingGraph.LossScaleInput] = Scaler.Input() };
            scale /= Scaler.Scale; // the gradients come out multiplied by the loss scale
        }
        var unet = UNetFor(batch.LatentShape);
        var result = unet.Session.Run(feed, seed, step);
        int k = 0;
        foreach (var p in UNetParams) Add(p.Accumulated, unet.Session.Gradient(unet.Parameters[k++]), scale);
        if (_text != null)
        {
            var upstream = unet.Session.InputGradient("encoder_hidden_states");
            _text.Run(new Dictionary<string, Tensor> { ["input_ids"] = batch.InputIds, [TrainingGraph.UpstreamInput] = upstream }, seed, step);
            foreach (var p in _params.Where(p => p.TextParameter != null)) Add(p.Accumulated, _text.Gradient(p.TextParameter!), scale);
        }
        return result.Loss;
    }

    private static void Add(float[] accumulated, Tensor gradient, double scale)
    {
        var g = gradient.ReadOnlySpan<float>();
        float s = (float)scale;
        for (int i = 0; i < accumulated.Length; i++) accumulated[i] += s * g[i];
    }

    /// <summary>
    /// The loss on a fixed set (evaluation or validation): the mean per-example MSE — over the masked elements when the
    /// batch carries a loss mask — of the examples with weight &gt; 0 (the others are padding).
    /// </summary>
    public double Evaluate(IReadOnlyList<TrainingBatch> set)
    {
        double sum = 0;
        int count = 0;
        foreach (var b in set)
        {
            var unet = UNetFor(b.LatentShape);
            var feed = new Dictionary<string, Tensor>(b.UNet);
            feed.Remove(TrainingGraph.LossMaskInput);
            if (_textForward != null) feed["encoder_hidden_states"] = _textForward.Run(new Dictionary<string, Tensor> { ["input_ids"] = b.InputIds }, new[] { _textHidden! })[_textHidden!.Name];
            var prediction = unet.Eval.Run(feed, new[] { unet.EvalPrediction })[unet.EvalPrediction.Name].To(DType.F32);
            var target = b.UNet[TrainingGraph.TargetInput];
            int rows = prediction.Shape[0], per = prediction.Numel / rows;
            var perSample = new float[rows];
            if (b.UNet.TryGetValue(TrainingGraph.LossMaskInput, out var mask)) MaskedMsePerSample(rows, per, prediction.ReadOnlySpan<float>(), target.ReadOnlySpan<float>(), mask.ReadOnlySpan<float>(), perSample);
            else LossReference.MsePerSample(rows, per, prediction.ReadOnlySpan<float>(), target.ReadOnlySpan<float>(), perSample);
            for (int r = 0; r < rows; r++)
                if (b.Weights[r] > 0) { sum += perSample[r]; count++; }
        }
        return sum / Math.Max(1, count);
    }

    /// <summary>l_b = Σ (√m·(p − t))² / Σ (√m)² over a row's elements (the masked mean; the feed holds √m); NaN for an empty mask.</summary>
    private static void MaskedMsePerSample(int rows, int per, ReadOnlySpan<float> prediction, ReadOnlySpan<float> target, ReadOnlySpan<float> sqrtMask, Span<float> perSample)
    {
        for (int r = 0; r < rows; r++)
        {
            double num = 0, den = 0;
            for (int e = r * per; e < (r + 1) * per; e++)
            {
                double m = sqrtMask[e], d = m * (prediction[e] - target[e]);
                num += d * d;
                den += m * m;
            }
            perSample[r] = den > 0 ? (float)(num / den) : 0f;
        }
    }

    public Dictionary<string, Tensor> ParameterTensors()
    {
        SyncHost();
        return _params.ToDictionary(p => p.Name, p => p.Value.Constant!.Clone());
    }

    public void LoadParameters(IReadOnlyDictionary<string, Tensor> tensors, string source)
    {
        foreach (var p in _params)
        {
            if (!tensors.TryGetValue(p.Name, out var t) || !Shapes.Equal(t.Shape, p.Value.Shape!))
                throw new InvalidFileException(source, $"the checkpoint lacks '{p.Name}' {Shapes.Format(p.Value.Shape!)} (it belongs to another configuration)");
            t.To(DType.F32).ReadOnlySpan<float>().CopyTo(p.Value.Constant!.Span<float>());
        }
    }

    /// <summary>A trained value as it stands (raw), or its moving average when <paramref name="ema"/> (and use_ema).</summary>
    private Tensor Current(Value v, bool ema)
    {
        SyncHost();
        var raw = v.Constant!.Clone();
        if (!ema || Ema == null) return raw;
        var name = _params.First(p => ReferenceEquals(p.Value.Constant, v.Constant)).Name;
        Ema.Shadow(name).CopyTo(raw.Span<float>());
        return raw;
    }

    private IEnumerable<LoraAdapter> CurrentAdapters(IEnumerable<AttachedLora> loras, bool ema = false) =>
        loras.Select(a => a.Adapter with { Down = Current(a.Down, ema), Up = Current(a.Up, ema) });

    /// <summary>The EMA tensors for a checkpoint (null without use_ema).</summary>
    public Dictionary<string, Tensor>? EmaTensors()
    {
        SyncHost();
        return Ema?.State();
    }

    public IReadOnlyList<LoraSource> SamplerLoras(bool ema = false)
    {
        var adapters = CurrentAdapters(_unetLoras, ema).Concat(CurrentAdapters(_textLoras, ema)).ToList();
        var result = new List<LoraSource>();
        if (adapters.Count > 0) result.Add(new LoraSource.Adapters("training", adapters));
        return result;
    }

    /// <summary>
    /// A selected-layer run's tuned weights for the sampler: by initializer name (the graph keeps each selected weight
    /// itself), in the model's stored shape and element type. Weights that are no initializer of the stored UNet are
    /// listed in <paramref name="missing"/> (sample grids cannot show them). Empty for LoRA runs.
    /// </summary>
    public IReadOnlyDictionary<string, IReadOnlyDictionary<string, Tensor>> SamplerWeights(out List<string> missing, bool ema = false)
    {
        missing = new List<string>();
        var tuned = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        if (_o.TrainLayers.Count == 0) return new Dictionary<string, IReadOnlyDictionary<string, Tensor>>();
        var stored = _model.UNetGraph.Initializers;
        foreach (var p in TunedLayers)
        {
            if (!stored.TryGetValue(p.Value.Name, out var s) || Shapes.Numel(s.Shape) != p.Value.Numel) { missing.Add(p.Name); continue; }
            tuned[p.Value.Name] = Current(p.Value, ema).Reshape(s.Shape).To(s.DType);
        }
        return new Dictionary<string, IReadOnlyDictionary<string, Tensor>> { [ModelFolder.UNet] = tuned };
    }

    /// <summary>Writes the LoRA (kohya keys) or the changed weights (diffusers keys, for `cudadream export --weights`).</summary>
    public (string? lora, string? weights) WriteResult(string basePath, IReadOnlyDictionary<string, string> metadata, bool ema = false)
    {
        // Both when selected UNet layers train beside a text-encoder LoRA.
        string? lora = null, file = null;
        if (_unetLoras.Count + _textLoras.Count > 0)
        {
            lora = basePath + ".safetensors";
            LoraWriter.WriteKohya(lora, CurrentAdapters(_unetLoras, ema).Concat(CurrentAdapters(_textLoras, ema)).ToList(), metadata);
        }
        if (TunedLayers.Any())
        {
            var weights = new Dictionary<string, Tensor>(StringComparer.Ordinal);
            foreach (var p in TunedLayers)
            {
                var t = Current(p.Value, ema);
                // Torch exports keep Linear weights as Wᵀ; the state dict holds W [out, in].
                if (_layerNames.TryGetValue(p.Value, out var n) && n.EndsWith("#transposed", StringComparison.Ordinal)) t = Sampling.SamplerLoras.Transpose2D(t);
                weights[p.Name] = t;
            }
            file = basePath + ".weights.safetensors";
            SafetensorsWriter.Write(file, weights, metadata);
        }
        return (lora, file);
    }

    /// <summary>The UNet weights of selected-layer fine-tuning (a text-encoder LoRA may train beside them).</summary>
    private IEnumerable<Trainable> TunedLayers => _params.Where(p => p.Group == "unet" && _o.TrainLayers.Count > 0);

    public void Dispose()
    {
        _device?.Dispose();
        foreach (var u in _unets.Values)
        {
            u.Session.Dispose();
            u.Eval.Dispose();
        }
        _text?.Dispose();
        _textForward?.Dispose();
        _context?.Dispose();
    }

    // ---- the update on the device ----

    /// <summary>The update runs on the device (<see cref="UseDeviceUpdate"/> succeeded).</summary>
    public bool DeviceResident => _device != null;

    /// <summary>What one device update counts (launches, bytes, syncs, replays) and its memory: null on the CPU.</summary>
    public IKernelDevice? Device => _context?.Device;
    public DeviceContext? Context => _context;

    /// <summary>
    /// Keeps the update on the device when the backend is a kernel device and the optimizer has device kernels (AdamW,
    /// SGD): gradients accumulate in device buffers, clipping, the optimizer, EMA and fp16's loss scale run as kernels,
    /// and the host reads one report per update. Returns the line saying where the update runs.
    /// </summary>
    public string UseDeviceUpdate(Optimizer optimizer, Action<string> say)
    {
        if (_context == null) return "update: on the host (cpu backend)";
        if (!DeviceOptimizer.Supports(optimizer))
            return $"update: on the host ({_o.Optimizer} has no device kernels yet; gradients are downloaded and parameters uploaded every update)";
        var unetMap = UNetParams.Select((_, k) => (0, k)).ToList();
        var nets = new DeviceNetworks(
            _unets.ToDictionary(kv => kv.Key, kv => (kv.Value.Session, (IReadOnlyList<(int, int)>)unetMap)),
            _text != null ? (_text, _params.Where(p => p.TextParameter != null).Select((_, k) => (1, k)).ToList()) : null,
            _textForward is DeviceExecutor f ? (f, _textHidden!) : null);
        var tensors = optimizer.Groups.Select(g => (IReadOnlyList<Tensor>)_params.Where(p => p.Group == g.Name).Select(p => p.Value.Constant!).ToList()).ToList();
        _device = new DeviceUpdate(_context, nets, optimizer, tensors, new DeviceUpdateOptions(_o.GradientAccumulationSteps, _o.MaxGradNorm, Scaler != null), Ema, say);
        if (Scaler != null) _device.Optimizer.SetLossScale(Scaler.Scale, Scaler.GoodSteps, Scaler.SkippedUpdates);
        return $"update: on the device ({optimizer.GetType().Name}{(Ema != null ? ", EMA" : "")}{(Scaler != null ? ", loss scale" : "")}; " +
            "accumulation, clipping and the step as kernels, captured once and replayed; one report read per update)";
    }

    /// <summary>Device memory of every executor of the run (arenas, run state, scratch): 0 on the CPU.</summary>
    public long ExecutorDeviceBytes
    {
        get
        {
            var all = _unets.Values.SelectMany(u => new[] { u.Session.Executor, u.Eval }).Append(_text?.Executor).Append(_textForward);
            return all.OfType<DeviceExecutor>().Sum(e => e.Memory.TotalBytes);
        }
    }

    /// <summary>The device update's own memory (accumulators, moments, EMA, tables): 0 when the update is on the host.</summary>
    public long OptimizerDeviceBytes => _device?.Optimizer.DeviceBytes ?? 0;

    /// <summary>One update on the device over its micro-steps' batches (see <see cref="DeviceUpdate.Run"/>).</summary>
    public UpdateReport DeviceStep(IReadOnlyList<TrainingBatch> batches, ulong seed, long firstStep, bool injectNaN)
    {
        var d = _device ?? throw new InvalidOperationException("the update is not on the device");
        _hostStale = true;
        var report = d.Run(batches, seed, firstStep, injectNaN);
        Scaler?.Mirror(report.LossScale, report.GoodSteps, report.Skipped);
        return report;
    }

    /// <summary>Brings the device's parameters, moments and EMA back to the host copies (before checkpoints, outputs and samples).</summary>
    public void SyncHost()
    {
        if (!_hostStale || _device == null) return;
        _device.Optimizer.Download();
        _hostStale = false;
    }

    /// <summary>After a resume loaded the host copies (parameters, optimizer, loss scale, EMA): the device takes them.</summary>
    public void StateLoaded()
    {
        if (_device == null) return;
        _device.Optimizer.Upload();
        if (Scaler != null) _device.Optimizer.SetLossScale(Scaler.Scale, Scaler.GoodSteps, Scaler.SkippedUpdates);
        _hostStale = false;
    }
}
