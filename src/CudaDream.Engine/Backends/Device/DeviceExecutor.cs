using System.Diagnostics;
using System.Runtime.InteropServices;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Tensors;

namespace CudaDream.Engine.Backends.Device;

/// <summary>
/// Executes an <see cref="ExecutionPlan"/> on a kernel device (cuda, or the emulator): one device allocation holds
/// the plan's arena, its run state (random key, index-check flags) and the nodes' shared scratch; constants are
/// resident in the <see cref="DeviceContext"/>, once for every executor of a run. Each node was compiled to launcher
/// calls with resolved pointers, so a step is a flat list of launches and allocates nothing.
/// <see cref="Run"/> copies inputs in, runs and downloads; <see cref="Enqueue"/> only enqueues (inputs staged in pinned
/// memory or already on the device, no wait), so a training update can be captured into a graph.
/// </summary>
public sealed class DeviceExecutor : IPlanExecutor
{
    private readonly ExecutionPlan _plan;
    private readonly bool _ownsContext;
    private readonly Dictionary<Value, DeviceAddress> _constants = new();
    private readonly HashSet<Value> _read;
    private readonly HashSet<Node> _planned;
    private readonly (Node Node, Action Run)[] _steps;
    private readonly List<(Node Node, string Problem)> _flags = new();
    private readonly DeviceAddress _key;
    private DeviceAddress _flagBase; // reserved on the first index check (few plans have any)
    private const int MaxErrorFlags = 4096;

    public DeviceContext Context { get; }
    public IKernelDevice Device => Context.Device;
    public DeviceMemory Memory { get; }
    public ExecutionPlan Plan => _plan;
    public string BackendName => Device.Name;
    public ulong Seed { get; set; }
    public long Step { get; set; }
    public bool Profile { get; set; }
    public Dictionary<string, double> OpSeconds { get; } = new();

    internal DeviceAddress RandomKey => _key;

    /// <summary>An executor with a context of its own.</summary>
    /// <param name="ownsDevice">Dispose <paramref name="device"/> with the executor.</param>
    /// <param name="separateAllocations">One allocation per tensor instead of one per plan (for memcheck and guard pages).</param>
    public DeviceExecutor(ExecutionPlan plan, IKernelDevice device, bool ownsDevice = false, bool separateAllocations = false)
        : this(plan, new DeviceContext(device, ownsDevice, separateAllocations), ownsContext: true) { }

    /// <summary>An executor in a shared <paramref name="context"/> (its constants resident once for all).</summary>
    public DeviceExecutor(ExecutionPlan plan, DeviceContext context) : this(plan, context, ownsContext: false) { }

    private DeviceExecutor(ExecutionPlan plan, DeviceContext context, bool ownsContext)
    {
        _plan = plan;
        Context = context;
        _ownsContext = ownsContext;
        Memory = new DeviceMemory(plan.ArenaBytes, context.SeparateAllocations);
        _read = ReadValues(plan);
        _planned = plan.Steps.ToHashSet();
        _key = Memory.AddConstant(16);
        try
        {
            _steps = plan.Steps.Select(n => (n, DeviceOps.Compile(new DeviceStepBuilder(this, n)))).ToArray();
            foreach (var v in plan.Offsets.Keys) AddressOf(v); // inputs no kernel reads still get their bytes
            Memory.Allocate(Device);
            context.Commit();
        }
        catch
        {
            context.Rollback();
            Memory.Dispose();
            if (ownsContext) context.Dispose();
            throw;
        }
    }

    /// <summary>Values something reads: node inputs and graph outputs.</summary>
    private static HashSet<Value> ReadValues(ExecutionPlan plan)
    {
        var read = new HashSet<Value>(plan.Graph.Outputs);
        foreach (var n in plan.Steps)
            foreach (var i in n.Inputs) if (i != null) read.Add(i);
        return read;
    }

    internal bool IsRead(Value v) => _read.Contains(v);

    /// <summary>Where a value lives on the device (a constant is given its place on first use).</summary>
    internal DeviceAddress AddressOf(Value v)
    {
        if (v.IsConstant)
        {
            if (_constants.TryGetValue(v, out var c)) return c;
            if (v.Constant == null && v.Splat == null)
                throw new CudaDreamException($"{_plan.Graph.Source}: weight '{v.Name}' has no data (its external weights file was not loaded)");
            return _constants[v] = Context.Place(v);
        }
        if (!_plan.Offsets.TryGetValue(v, out var off)) throw new GraphException($"value '{v.Name}' has no place in the plan");
        var root = AliasRoot(v);
        return Memory.ArenaValue(off, ExecutionPlan.ByteSize(root), root);
    }

    /// <summary>The value whose bytes <paramref name="v"/> views (outputs of view nodes the plan does not run are aliases).</summary>
    private Value AliasRoot(Value v)
    {
        while (v.Producer is { } p && !_planned.Contains(p) && p.Inputs.Count > 0 && p.Inputs[0] is { IsConstant: false } src) v = src;
        return v;
    }

    /// <summary>The device address of a runtime value or an uploaded constant (for device-side optimizers).</summary>
    public DevicePtr Address(Value v) => AddressOf(v).Ptr;

    internal DeviceAddress AddErrorFlag(Node node, string problem)
    {
        if (_flags.Count >= MaxErrorFlags) throw new GraphException(node, $"more than {MaxErrorFlags} nodes check their indices");
        if (_flagBase.IsNull) _flagBase = Memory.AddConstant(MaxErrorFlags * 4L);
        _flags.Add((node, problem));
        return _flagBase.At((_flags.Count - 1) * 4L);
    }

    /// <summary>Makes the device see new host data of a trained constant (once for every executor of the context).</summary>
    public void UploadParameter(Value v)
    {
        if (v.Constant != null && _constants.ContainsKey(v)) Context.Refresh(v.Constant);
    }

    public Dictionary<string, Tensor> Run(IReadOnlyDictionary<string, Tensor> inputs, IEnumerable<Value>? fetch = null)
    {
        var g = _plan.Graph;
        foreach (var input in g.Inputs)
        {
            if (!inputs.TryGetValue(input.Name, out var t)) throw new CudaDreamException($"missing input '{input.Name}' (expected {input.DType}{Shapes.Format(input.Shape!)})");
            if (!Shapes.Equal(t.Shape, input.Shape!))
                throw new CudaDreamException($"input '{input.Name}' has shape {Shapes.Format(t.Shape)}, the plan was specialised for {Shapes.Format(input.Shape!)}");
            if (_plan.Offsets.ContainsKey(input)) Device.CopyToDevice(AddressOf(input).Ptr, t.To(input.DType).Data.Span);
        }
        WriteRunState();
        RunSteps();
        CheckErrorFlags();
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var v in fetch ?? g.Outputs) result[v.Name] = Read(v);
        return result;
    }

    /// <summary>
    /// Enqueues a run without waiting: every graph input comes from <paramref name="inputs"/> (staged host bytes, or
    /// device memory of another executor), the random key from <paramref name="randomKey"/> (16 bytes: seed, step as
    /// two u64). Nothing is downloaded and index checks are not read: <see cref="ErrorFlags"/> says where they are.
    /// Capturable: a graph replay of it reads the staged bytes as they are at replay.
    /// </summary>
    public void Enqueue(IReadOnlyDictionary<string, DeviceInput> inputs, DeviceInput randomKey)
    {
        foreach (var input in _plan.Graph.Inputs)
        {
            if (!inputs.TryGetValue(input.Name, out var from)) throw new CudaDreamException($"missing input '{input.Name}' (expected {input.DType}{Shapes.Format(input.Shape!)})");
            if (_plan.Offsets.ContainsKey(input)) from.CopyTo(Device, AddressOf(input).Ptr, ExecutionPlan.ByteSize(input));
        }
        randomKey.CopyTo(Device, _key.Ptr, 16);
        if (_flags.Count > 0) Device.Memset(_flagBase.Ptr, 0, _flags.Count * 4L);
        RunSteps();
    }

    /// <summary>The index-check flags of this plan (int each, nonzero = the check failed) and their count.</summary>
    public (DevicePtr Flags, int Count) ErrorFlags => (_flags.Count == 0 ? DevicePtr.Null : _flagBase.Ptr, _flags.Count);

    /// <summary>The failure of flag <paramref name="index"/> as the exception a <see cref="Run"/> throws.</summary>
    public GraphException ErrorFlagFailure(int index) => new(_flags[index].Node, _flags[index].Problem);

    private void RunSteps()
    {
        OpSeconds.Clear();
        var sw = new Stopwatch();
        foreach (var (node, run) in _steps)
        {
            if (Profile) sw.Restart();
            run();
            if (!Profile) continue;
            Device.Synchronize();
            OpSeconds[node.Op] = OpSeconds.GetValueOrDefault(node.Op) + sw.Elapsed.TotalSeconds;
        }
    }

    private void WriteRunState()
    {
        Span<ulong> key = stackalloc ulong[2];
        key[0] = Seed;
        key[1] = (ulong)Step;
        Device.CopyToDevice(_key.Ptr, MemoryMarshal.AsBytes(key));
        if (_flags.Count > 0) Device.Memset(_flagBase.Ptr, 0, _flags.Count * 4L);
    }

    private void CheckErrorFlags()
    {
        if (_flags.Count == 0) return;
        var flags = new int[_flags.Count];
        Device.Synchronize();
        Device.CopyToHost(MemoryMarshal.AsBytes(flags.AsSpan()), _flagBase.Ptr);
        int bad = Array.FindIndex(flags, f => f != 0);
        if (bad >= 0) throw new GraphException(_flags[bad].Node, _flags[bad].Problem);
    }

    /// <summary>Downloads a value (a constant: a copy of its host data).</summary>
    public Tensor Read(Value v)
    {
        if (v.Constant != null) return v.Constant.Clone();
        if (v.Splat != null) return Specializer.MaterializeSplat(v);
        var t = Tensor.Zeros(v.DType, v.Shape!);
        Device.Synchronize();
        Device.CopyToHost(t.Data.Span, AddressOf(v).Ptr);
        return t;
    }

    public void Dispose()
    {
        Memory.Dispose();
        if (_ownsContext) Context.Dispose();
    }
}
