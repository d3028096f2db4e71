using CudaDream.Engine;
using CudaDream.Engine.Backends;
using CudaDream.Engine.Backends.Device;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Tensors;
using CudaDream.Engine.Training;
using CudaDream.Engine.Training.Optimizers;

namespace CudaDream.Diffusion.Training;

/// <summary>The executors one update runs on a kernel device, and how their trained tensors map to the optimizer's groups.</summary>
/// <param name="UNets">Per latent size: the UNet training step and, for each of its parameters, (group, index) in the optimizer.</param>
/// <param name="Text">The text encoder's training step with its parameters' (group, index), when it trains.</param>
/// <param name="TextForward">The text encoder forward whose hidden states feed the UNet, when the text encoder trains.</param>
internal sealed record DeviceNetworks(
    IReadOnlyDictionary<(int Height, int Width), (TrainingSession Session, IReadOnlyList<(int Group, int Index)> Map)> UNets,
    (TrainingSession Session, IReadOnlyList<(int Group, int Index)> Map)? Text,
    (DeviceExecutor Executor, Value Hidden)? TextForward);

/// <summary>
/// One training update of a run kept on the device: the micro-steps' batches are staged in pinned memory, then the
/// whole update — per micro-step the text encoder forward, the UNet step, the text encoder step and the gradient
/// accumulation; then clipping, the optimizer, fp16's loss scale and the report — is enqueued without a wait, captured
/// into a graph the first time a sequence of batch shapes is seen and replayed after. The host waits once per update,
/// for the 48-byte report. Falls back to plain launches when capture fails, saying so once.
/// </summary>
internal sealed class DeviceUpdate : IDisposable
{
    private const long KeyBytes = 16;
    private readonly DeviceContext _context;
    private readonly DeviceNetworks _nets;
    private readonly DeviceOptimizer _optimizer;
    private readonly Dictionary<(int, int), int> _unetSources = new();
    private readonly int _textSource = -1;
    private readonly Dictionary<DeviceExecutor, int> _flagSources = new(ReferenceEqualityComparer.Instance);
    private readonly HostBuffer _staging;
    private readonly long _microBytes;
    private readonly int _micros;
    private readonly Dictionary<string, IDeviceGraph> _graphs = new();
    private readonly Action<string> _say;
    private bool _captureFailed;

    public DeviceOptimizer Optimizer => _optimizer;
    public bool UsesGraphs => !_captureFailed;

    public DeviceUpdate(DeviceContext context, DeviceNetworks nets, Optimizer optimizer, IReadOnlyList<IReadOnlyList<Tensor>> tensors, DeviceUpdateOptions options,
        ExponentialMovingAverage? ema, Action<string> say)
    {
        _context = context;
        _nets = nets;
        _micros = options.MicroSteps;
        _say = say;
        _optimizer = new DeviceOptimizer(context, optimizer, tensors, options, ema);
        try
        {
            foreach (var (shape, (session, map)) in nets.UNets)
            {
                var e = Device(session);
                if (session.Training.Loss.DType != DType.F32) throw new NotSupportedException($"the loss is {session.Training.Loss.DType}");
                _unetSources[shape] = _optimizer.AddGradientSource(map.Select((gi, k) => (gi.Group, gi.Index, e.Address(session.Training.Parameters[k].Gradient))).ToList());
                _flagSources[e] = _optimizer.AddFlagSource(e);
            }
            if (nets.Text is var (text, textMap))
            {
                var e = Device(text);
                _textSource = _optimizer.AddGradientSource(textMap.Select((gi, k) => (gi.Group, gi.Index, e.Address(text.Training.Parameters[k].Gradient))).ToList());
                _flagSources[e] = _optimizer.AddFlagSource(e);
            }
            if (nets.TextForward is var (forward, _)) _flagSources[forward] = _optimizer.AddFlagSource(forward);
            _microBytes = nets.UNets.Values.Max(u => MicroBytes(u.Session));
            _staging = context.Device.AllocateHost(_microBytes * _micros);
        }
        catch
        {
            _optimizer.Dispose();
            throw;
        }
    }

    private static DeviceExecutor Device(TrainingSession s) => s.Executor as DeviceExecutor ?? throw new InvalidOperationException("a device update needs device executors");

    /// <summary>Staged bytes of one micro-step: the UNet's host-fed inputs, the token ids when the text encoder trains, three random keys.</summary>
    private long MicroBytes(TrainingSession unet) => StagedInputs(unet).Sum(v => Align(ExecutionPlan.ByteSize(v))) + TextIdsBytes() + 3 * KeyBytes;

    private long TextIdsBytes() => _nets.Text is var (t, _) ? Align(ExecutionPlan.ByteSize(t.Plan.Graph.Inputs.First(i => i.Name == "input_ids"))) : 0;

    private static long Align(long bytes) => (bytes + 15) / 16 * 16;

    /// <summary>The UNet inputs the host supplies (the rest come from the device: hidden states of the text encoder, the loss scale).</summary>
    private IEnumerable<Value> StagedInputs(TrainingSession unet) => unet.Plan.Graph.Inputs.Where(i =>
        i.Name != TrainingGraph.LossScaleInput && !(_nets.TextForward != null && i.Name == "encoder_hidden_states"));

    /// <summary>
    /// Runs one update over <paramref name="batches"/> (its micro-steps; <paramref name="firstStep"/> keys the first's
    /// in-graph randomness, as the host path's micro-step index does). <paramref name="injectNaN"/> poisons the
    /// accumulated gradient (fault tests), which runs that update without a graph.
    /// </summary>
    public UpdateReport Run(IReadOnlyList<TrainingBatch> batches, ulong seed, long firstStep, bool injectNaN = false)
    {
        if (batches.Count != _micros) throw new ArgumentException($"{batches.Count} batches for {_micros} micro-steps");
        var layout = new List<Dictionary<string, DeviceInput>>();
        for (int m = 0; m < _micros; m++) layout.Add(Stage(batches[m], m, seed, firstStep + m));
        _optimizer.Stage();
        string key = string.Join(";", batches.Select(b => $"{b.LatentShape.Height}x{b.LatentShape.Width}"));
        if (injectNaN || _captureFailed) Enqueue(batches, layout, injectNaN);
        else
        {
            if (!_graphs.TryGetValue(key, out var graph)) graph = Capture(key, batches, layout);
            if (graph != null) graph.Replay();
            else Enqueue(batches, layout, false);
        }
        return _optimizer.Complete();
    }

    private IDeviceGraph? Capture(string key, IReadOnlyList<TrainingBatch> batches, List<Dictionary<string, DeviceInput>> layout)
    {
        var d = _context.Device;
        d.BeginCapture();
        try
        {
            Enqueue(batches, layout, false);
        }
        catch (Exception e) when (e is CudaDreamException or DeviceCaptureException)
        {
            try { d.EndCapture().Dispose(); } catch (CudaDreamException) { }
            return CaptureFailed(e);
        }
        try { return _graphs[key] = d.EndCapture(); }
        catch (CudaDreamException e) { return CaptureFailed(e); }
    }

    private IDeviceGraph? CaptureFailed(Exception e)
    {
        _captureFailed = true;
        _say($"notice: the training update could not be captured into a graph ({e.Message.Split('\n')[0]}); it runs as plain launches");
        return null;
    }

    /// <summary>Writes micro-step <paramref name="m"/>'s host inputs and random keys into its staging slot; returns where each input comes from.</summary>
    private Dictionary<string, DeviceInput> Stage(TrainingBatch batch, int m, ulong seed, long step)
    {
        var unet = _nets.UNets.TryGetValue(batch.LatentShape, out var u) ? u.Session : throw new InvalidOperationException($"no UNet for latents {batch.LatentShape}");
        long at = m * _microBytes;
        var inputs = new Dictionary<string, DeviceInput>(StringComparer.Ordinal);
        foreach (var v in StagedInputs(unet))
        {
            if (!batch.UNet.TryGetValue(v.Name, out var t)) throw new CudaDreamException($"missing input '{v.Name}' (expected {v.DType}{Shapes.Format(v.Shape!)})");
            if (!Shapes.Equal(t.Shape, v.Shape!)) throw new CudaDreamException($"input '{v.Name}' has shape {Shapes.Format(t.Shape)}, the plan was specialised for {Shapes.Format(v.Shape!)}");
            t.To(v.DType).Data.Span.CopyTo(_staging.Span(at, ExecutionPlan.ByteSize(v)));
            inputs[v.Name] = new DeviceInput.Staged(_staging, at);
            at += Align(ExecutionPlan.ByteSize(v));
        }
        if (_nets.Text is var (text, _))
        {
            var ids = text.Plan.Graph.Inputs.First(i => i.Name == "input_ids");
            batch.InputIds.To(ids.DType).Data.Span.CopyTo(_staging.Span(at, ExecutionPlan.ByteSize(ids)));
            inputs["input_ids"] = new DeviceInput.Staged(_staging, at);
            at += TextIdsBytes();
        }
        // Random keys, as the host path sets them: the UNet and text steps (seed, step); the text forward its own (Seed, Step).
        WriteKey(at, seed, step);
        WriteKey(at + KeyBytes, seed, step);
        if (_nets.TextForward is var (forward, _)) WriteKey(at + 2 * KeyBytes, forward.Seed, forward.Step);
        inputs["#key"] = new DeviceInput.Staged(_staging, at);
        inputs["#text-key"] = new DeviceInput.Staged(_staging, at + KeyBytes);
        inputs["#forward-key"] = new DeviceInput.Staged(_staging, at + 2 * KeyBytes);
        return inputs;
    }

    private void WriteKey(long at, ulong seed, long step)
    {
        var k = _staging.Span<ulong>(at, 2);
        k[0] = seed;
        k[1] = (ulong)step;
    }

    /// <summary>The whole update in stream order (what a graph captures).</summary>
    private void Enqueue(IReadOnlyList<TrainingBatch> batches, List<Dictionary<string, DeviceInput>> layout, bool injectNaN)
    {
        _optimizer.BeginUpdate();
        for (int m = 0; m < batches.Count; m++)
        {
            var staged = layout[m];
            var unet = _nets.UNets[batches[m].LatentShape].Session;
            var unetExec = Device(unet);
            var feed = new Dictionary<string, DeviceInput>(staged, StringComparer.Ordinal);
            if (_nets.TextForward is var (forward, hidden))
            {
                forward.Enqueue(new Dictionary<string, DeviceInput> { ["input_ids"] = staged["input_ids"] }, staged["#forward-key"]);
                _optimizer.CheckFlags(_flagSources[forward]);
                feed["encoder_hidden_states"] = new DeviceInput.OnDevice(forward.Address(hidden));
            }
            if (unet.Plan.Graph.Inputs.Any(i => i.Name == TrainingGraph.LossScaleInput))
                feed[TrainingGraph.LossScaleInput] = new DeviceInput.OnDevice(_optimizer.LossScale);
            unetExec.Enqueue(feed, staged["#key"]);
            _optimizer.CheckFlags(_flagSources[unetExec]);
            _optimizer.AccumulateLoss(unetExec.Address(unet.Training.Loss));
            _optimizer.Accumulate(_unetSources[batches[m].LatentShape], m == 0);
            if (_nets.Text is var (text, _))
            {
                var upstream = unetExec.Address(unet.Training.InputGradients["encoder_hidden_states"]);
                Device(text).Enqueue(new Dictionary<string, DeviceInput>
                {
                    ["input_ids"] = staged["input_ids"],
                    [TrainingGraph.UpstreamInput] = new DeviceInput.OnDevice(upstream),
                }, staged["#text-key"]);
                _optimizer.CheckFlags(_flagSources[Device(text)]);
                _optimizer.Accumulate(_textSource, m == 0);
            }
        }
        if (injectNaN) _optimizer.InjectNaNGradient();
        _optimizer.EndUpdate();
    }

    public void Dispose()
    {
        foreach (var g in _graphs.Values) g.Dispose();
        _graphs.Clear();
        _staging?.Dispose();
        _optimizer.Dispose();
    }
}
