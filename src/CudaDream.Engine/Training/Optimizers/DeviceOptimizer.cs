using System.Runtime.InteropServices;
using CudaDream.Engine.Backends;
using CudaDream.Engine.Backends.Device;
using CudaDream.Engine.Tensors;

namespace CudaDream.Engine.Training.Optimizers;

/// <summary>What a device-resident update does besides the optimizer step.</summary>
/// <param name="MicroSteps">Micro-steps whose gradients are averaged into one update (gradient accumulation).</param>
/// <param name="MaxGradNorm">Global-norm clipping (≤ 0: none; the norm and the NaN/Inf check run anyway).</param>
/// <param name="LossScaling">fp16's dynamic loss scale (torch.cuda.amp.GradScaler) lives on the device.</param>
public sealed record DeviceUpdateOptions(int MicroSteps = 1, double MaxGradNorm = 0, bool LossScaling = false);

/// <summary>One update's report, read back from the device (48 bytes).</summary>
/// <param name="Loss">The mean loss of the micro-steps.</param>
/// <param name="Applied">False when a gradient was NaN/Inf: the parameters, moments and step counts are unchanged.</param>
public readonly record struct UpdateReport(double Loss, double GradNorm, bool Applied, double LossScale, int GoodSteps, int Skipped);

/// <summary>
/// The training update kept on the device: the micro-steps' gradients are accumulated into device buffers, the global
/// norm, clipping, AdamW or SGD, and fp16's loss scale run as kernels (kernels/optimizer.cu), and the parameters are
/// the resident copies every executor of the <see cref="DeviceContext"/> reads — so an update uploads nothing but its
/// per-update scalars (staged in pinned memory, capturable) and reads back one 48-byte report. The host optimizer
/// keeps the hyper-parameters, groups and step counts; <see cref="Download"/> brings the parameters and moments back
/// for checkpoints and outputs, <see cref="Upload"/> sends them after a resume. Everything is enqueued in stream order,
/// so one update (<see cref="BeginUpdate"/> … <see cref="EndUpdate"/>) can be captured into a graph and replayed.
/// </summary>
public sealed class DeviceOptimizer : IDisposable
{
    private sealed record Parameter(int Group, OptimizerParameter Host, Tensor Tensor, DevicePtr Value, long Accumulator, long M, long V, long Shadow);

    private readonly DeviceContext _context;
    private readonly Optimizer _optimizer;
    private readonly DeviceUpdateOptions _options;
    private readonly List<Parameter> _params = new();
    private readonly DeviceBuffer _memory;
    private readonly HostBuffer _staging;
    private readonly long _state, _partials, _configs, _allTable, _emaTable, _emaDecay;
    private readonly ExponentialMovingAverage? _ema;
    private long _emaUpdates;
    private readonly long[] _groupTables;
    private readonly int _chunks, _configBytes;
    private readonly List<(DeviceBuffer Table, int Count)> _sources = new();
    private readonly List<DeviceExecutor> _flagged = new();
    private const int FlagTagStride = 1 << 16;

    private IKernelDevice D => _context.Device;

    public static bool Supports(Optimizer optimizer) => optimizer is AdamW or Sgd;

    /// <param name="tensors">Per group of <paramref name="optimizer"/>, per parameter, the host tensor of its value: resident and mutable in the context.</param>
    /// <param name="ema">A moving average of the parameters (by their optimizer names) to keep on the device too.</param>
    public DeviceOptimizer(DeviceContext context, Optimizer optimizer, IReadOnlyList<IReadOnlyList<Tensor>> tensors, DeviceUpdateOptions options, ExponentialMovingAverage? ema = null)
    {
        if (!Supports(optimizer)) throw new NotSupportedException($"{optimizer.GetType().Name} has no device kernels (AdamW and SGD do)");
        if (options.MicroSteps < 1) throw new ArgumentOutOfRangeException(nameof(options), "micro-steps must be at least 1");
        _context = context;
        _optimizer = optimizer;
        _options = options;
        _configBytes = optimizer is AdamW ? Marshal.SizeOf<AdamWConfig>() : Marshal.SizeOf<SgdConfig>();
        _ema = ema;
        _emaUpdates = ema?.Updates ?? 0;

        // Layout of the one allocation: state | configs | partials | per parameter accumulator, m, v | slot tables.
        long at = 0;
        long Take(long bytes) { long a = at; at = (at + bytes + 255) / 256 * 256; return a; }
        _state = Take(UpdateState.Bytes);
        _configs = Take((long)_configBytes * optimizer.Groups.Count + 16); // the groups' configs, then EMA's 1 − decay
        for (int g = 0; g < optimizer.Groups.Count; g++)
        {
            var group = optimizer.Groups[g];
            if (tensors[g].Count != group.Parameters.Count) throw new ArgumentException($"group '{group.Name}': {tensors[g].Count} tensors for {group.Parameters.Count} parameters");
            for (int i = 0; i < group.Parameters.Count; i++)
            {
                var host = group.Parameters[i];
                var t = tensors[g][i];
                if (t.DType != DType.F32 || t.Numel != host.Length) throw new ArgumentException($"parameter '{host.Name}': its tensor is {t}, expected F32 with {host.Length} elements");
                if (!context.IsMutable(t)) throw new ArgumentException($"parameter '{host.Name}' is not marked mutable in the device context");
                var ptr = context.Find(t) ?? throw new CudaDreamException($"parameter '{host.Name}' is not resident on the device (no executor reads it)");
                long bytes = (long)host.Length * 4;
                _params.Add(new Parameter(g, host, t, ptr, Take(bytes), Take(bytes), Take(bytes), ema != null ? Take(bytes) : -1));
            }
        }
        _chunks = OptimizerKernels.OptimizerChunks(_params.Select(p => (long)p.Host.Length));
        _partials = Take((long)_params.Count * _chunks * 4);
        int slot = Marshal.SizeOf<ParamSlot>();
        _allTable = Take((long)_params.Count * slot);
        _groupTables = optimizer.Groups.Select((_, g) => Take((long)_params.Count(p => p.Group == g) * slot)).ToArray();
        _emaTable = ema != null ? Take((long)_params.Count * Marshal.SizeOf<EmaSlot>()) : -1;
        _emaDecay = _configs + (long)_configBytes * optimizer.Groups.Count;

        _memory = D.Allocate(at);
        _staging = D.AllocateHost(StagedConfigBytes + UpdateState.Bytes);
        try
        {
            D.Memset(_memory.Ptr, 0, at);
            WriteTable(_allTable, _params);
            for (int g = 0; g < optimizer.Groups.Count; g++) WriteTable(_groupTables[g], _params.Where(p => p.Group == g).ToList());
            SetLossScale(1, 0, 0);
            if (ema != null)
            {
                var emaSlots = _params.Select(p => new EmaSlot { Shadow = At(p.Shadow), Param = p.Value, Count = p.Host.Length }).ToArray();
                D.CopyToDevice(At(_emaTable), MemoryMarshal.AsBytes(emaSlots.AsSpan()));
                UploadEma();
            }
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    private DevicePtr At(long offset) => _memory.Ptr + offset;

    /// <summary>Device memory of the update: accumulators, moments, EMA, state, slot tables.</summary>
    public long DeviceBytes => _memory.Bytes + _sources.Sum(s => s.Table.Bytes);

    /// <summary>Staged per update: the groups' configs and EMA's 1 − decay.</summary>
    private long StagedConfigBytes => (long)_configBytes * _optimizer.Groups.Count + 16;

    private void WriteTable(long offset, IReadOnlyList<Parameter> ps)
    {
        var slots = ps.Select(p => new ParamSlot { Param = p.Value, Grad = At(p.Accumulator), M = At(p.M), V = At(p.V), Count = p.Host.Length }).ToArray();
        D.CopyToDevice(At(offset), MemoryMarshal.AsBytes(slots.AsSpan()));
    }

    /// <summary>The device address of the current loss scale (a float: the training graph's <c>loss_scale</c> input).</summary>
    public DevicePtr LossScale => At(_state + UpdateState.LossScaleOffset);

    /// <summary>The accumulated (averaged, unscaled) gradient of parameter <paramref name="index"/> of group <paramref name="group"/>.</summary>
    public DevicePtr AccumulatedGradient(int group, int index) => At(_params.Where(p => p.Group == group).ElementAt(index).Accumulator);

    /// <summary>Registers a training executor's parameter gradients (group, parameter index, address); returns the source for <see cref="Accumulate"/>.</summary>
    public int AddGradientSource(IReadOnlyList<(int Group, int Index, DevicePtr Gradient)> gradients)
    {
        var slots = gradients.Select(g =>
        {
            var p = _params.Where(q => q.Group == g.Group).ElementAt(g.Index);
            return new AccumulateSlot { Accumulator = At(p.Accumulator), Gradient = g.Gradient, Count = p.Host.Length };
        }).ToArray();
        var table = D.Allocate(Math.Max(1, slots.Length) * (long)Marshal.SizeOf<AccumulateSlot>());
        D.CopyToDevice(table.Ptr, MemoryMarshal.AsBytes(slots.AsSpan()));
        _sources.Add((table, slots.Length));
        return _sources.Count - 1;
    }

    /// <summary>Registers an executor whose index checks the update reports (a failed one throws from <see cref="Complete"/>).</summary>
    public int AddFlagSource(DeviceExecutor executor)
    {
        _flagged.Add(executor);
        return _flagged.Count - 1;
    }

    /// <summary>
    /// Host side, before an update is enqueued or replayed: each group's scalars at its next step number and current
    /// learning rate, into the pinned staging area (the captured update copies them in).
    /// </summary>
    public void Stage()
    {
        for (int g = 0; g < _optimizer.Groups.Count; g++)
        {
            var group = _optimizer.Groups[g];
            long step = group.StepCount + 1;
            var at = _staging.Span(g * (long)_configBytes, _configBytes);
            switch (_optimizer)
            {
                case AdamW a:
                    MemoryMarshal.Write(at, AdamWConfig.From(AdamWScalars.For(a.Options, group.LearningRate, group.WeightDecay, step)));
                    break;
                case Sgd s:
                    MemoryMarshal.Write(at, new SgdConfig((float)group.LearningRate, (float)s.Options.Momentum, (float)(1 - s.Options.Dampening),
                        (float)group.WeightDecay, 1f, s.Options.Nesterov ? 1 : 0, step == 1 ? 1 : 0));
                    break;
            }
        }
        _staging.Span<float>((long)_configBytes * _optimizer.Groups.Count, 1)[0] =
            _ema != null ? (float)(1 - ExponentialMovingAverage.DecayAt(_emaUpdates + 1, _ema.Decay)) : 0f;
    }

    /// <summary>Enqueues the start of an update: the staged scalars are copied in, the report is cleared.</summary>
    public void BeginUpdate()
    {
        D.CopyToDeviceAsync(At(_configs), _staging, 0, StagedConfigBytes);
        OptimizerKernels.UpdateBegin(D, At(_state), 1f / _options.MicroSteps);
    }

    /// <summary>Enqueues adding a micro-step's gradients (times 1/(micro-steps · loss scale)) to the accumulators.</summary>
    public void Accumulate(int source, bool firstMicroStep)
    {
        var (table, count) = _sources[source];
        if (count > 0) OptimizerKernels.GradAccumulate(D, table.Ptr, count, _chunks, At(_state), firstMicroStep);
    }

    /// <summary>Enqueues adding a micro-step's loss (a device float) to the report's mean loss.</summary>
    public void AccumulateLoss(DevicePtr loss) => OptimizerKernels.LossAccumulate(D, At(_state), loss, 1f / _options.MicroSteps);

    /// <summary>Enqueues folding an executor's index-check flags into the report.</summary>
    public void CheckFlags(int flagSource)
    {
        var (flags, count) = _flagged[flagSource].ErrorFlags;
        if (count > 0) OptimizerKernels.ErrorFlagsFirst(D, flags, count, flagSource * FlagTagStride, At(_state));
    }

    /// <summary>Enqueues the end of an update: global norm (and clip), the optimizer step per group, the loss scale, the report copy.</summary>
    public void EndUpdate()
    {
        var nonfinite = At(_state + UpdateState.NonfiniteOffset);
        var clip = At(_state + UpdateState.GradNormOffset); // grad_norm, clip_coef: the two floats the kernels call clip_state
        OptimizerKernels.GradNorm(D, At(_allTable), _params.Count, _chunks, At(_partials), clip, nonfinite, (float)_options.MaxGradNorm);
        for (int g = 0; g < _optimizer.Groups.Count; g++)
        {
            int count = _params.Count(p => p.Group == g);
            if (count == 0) continue;
            var config = At(_configs + g * (long)_configBytes);
            if (_optimizer is AdamW) OptimizerKernels.AdamWUpdate(D, At(_groupTables[g]), count, _chunks, config, clip, nonfinite);
            else OptimizerKernels.SgdUpdate(D, At(_groupTables[g]), count, _chunks, config, clip, nonfinite);
        }
        if (_ema != null) OptimizerKernels.EmaUpdate(D, At(_emaTable), _params.Count, _chunks, At(_emaDecay), nonfinite);
        if (_options.LossScaling)
            OptimizerKernels.LossScaleUpdate(D, At(_state), LossScaler.GrowthInterval, (float)LossScaler.GrowthFactor, (float)LossScaler.BackoffFactor);
        D.CopyToHostAsync(_staging, StagedConfigBytes, At(_state), UpdateState.Bytes);
    }

    /// <summary>Makes the first parameter's accumulated gradient NaN (fault tests; a pageable copy, so not in a captured update).</summary>
    public void InjectNaNGradient()
    {
        float nan = float.NaN;
        D.CopyToDevice(At(_params[0].Accumulator), MemoryMarshal.AsBytes(new ReadOnlySpan<float>(in nan)));
    }

    /// <summary>
    /// Waits for the update (the one host synchronisation of an update) and reads its report. An applied update
    /// advances the host groups' step counts; a failed index check throws the error a plain run would.
    /// </summary>
    public UpdateReport Complete()
    {
        D.Synchronize();
        var s = MemoryMarshal.Read<UpdateState>(_staging.Span(StagedConfigBytes, UpdateState.Bytes));
        if (s.ErrorFlag != 0)
        {
            int tag = (s.ErrorFlag - 1) / FlagTagStride, index = (s.ErrorFlag - 1) % FlagTagStride;
            throw _flagged[tag].ErrorFlagFailure(index);
        }
        bool applied = s.Nonfinite == 0;
        if (applied)
        {
            foreach (var g in _optimizer.Groups) g.StepCount++;
            if (_ema != null) _emaUpdates++;
        }
        return new UpdateReport(s.Loss, s.GradNorm, applied, s.LossScale, s.GoodSteps, s.Skipped);
    }

    /// <summary>Sets the device's loss scale state (a new run: 1 or the scaler's initial scale; a resume: the checkpoint's).</summary>
    public void SetLossScale(double scale, int goodSteps, int skipped)
    {
        var s = new UpdateState { LossScale = (float)scale, GoodSteps = goodSteps, Skipped = skipped, GradScale = 1 };
        D.CopyToDevice(At(_state), MemoryMarshal.AsBytes(new ReadOnlySpan<UpdateState>(in s)));
    }

    /// <summary>Copies the device's parameters into their host tensors and its moments into the host optimizer's state (one wait).</summary>
    public void Download()
    {
        D.Synchronize();
        var state = new Dictionary<string, Tensor>(_optimizer.State(), StringComparer.Ordinal);
        var slots = SlotNames();
        foreach (var p in _params)
        {
            D.CopyToHost(p.Tensor.Data.Span, p.Value);
            string prefix = $"{_optimizer.Groups[p.Group].Name}/{p.Host.Name}/";
            var m = Tensor.Zeros(DType.F32, p.Host.Length);
            D.CopyToHost(m.Data.Span, At(p.M));
            state[prefix + slots[0]] = m;
            if (slots.Length > 1)
            {
                var v = Tensor.Zeros(DType.F32, p.Host.Length);
                D.CopyToHost(v.Data.Span, At(p.V));
                state[prefix + slots[1]] = v;
            }
        }
        _optimizer.Load(state);
        if (_ema != null)
        {
            var ema = new Dictionary<string, Tensor>(StringComparer.Ordinal) { ["ema.updates"] = Tensor.FromArray(new[] { _emaUpdates }, 1) };
            foreach (var p in _params)
            {
                var shadow = Tensor.Zeros(DType.F32, p.Host.Length);
                D.CopyToHost(shadow.Data.Span, At(p.Shadow));
                ema[p.Host.Name] = shadow;
            }
            _ema.Load(ema, "device");
        }
    }

    /// <summary>Copies the host tensors and the host optimizer's moments to the device (after a resume, or host-side edits).</summary>
    public void Upload()
    {
        var state = _optimizer.State();
        var slots = SlotNames();
        foreach (var p in _params)
        {
            _context.Refresh(p.Tensor);
            string prefix = $"{_optimizer.Groups[p.Group].Name}/{p.Host.Name}/";
            D.CopyToDevice(At(p.M), state[prefix + slots[0]].Data.Span);
            if (slots.Length > 1) D.CopyToDevice(At(p.V), state[prefix + slots[1]].Data.Span);
        }
        UploadEma();
    }

    private void UploadEma()
    {
        if (_ema == null) return;
        var state = _ema.State();
        _emaUpdates = _ema.Updates;
        foreach (var p in _params)
            D.CopyToDevice(At(p.Shadow), (state.TryGetValue(p.Host.Name, out var t) ? t : throw new ArgumentException($"the EMA has no '{p.Host.Name}'")).Data.Span);
    }

    private string[] SlotNames() => _optimizer is AdamW ? ["exp_avg", "exp_avg_sq"] : ["momentum_buffer"];

    public void Dispose()
    {
        foreach (var (t, _) in _sources) t.Dispose();
        _sources.Clear();
        _staging?.Dispose();
        _memory?.Dispose();
    }
}
