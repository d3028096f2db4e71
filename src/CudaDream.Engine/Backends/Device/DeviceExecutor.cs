using System.Diagnostics;
using System.Runtime.InteropServices;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Tensors;

namespace CudaDream.Engine.Backends.Device;

/// <summary>
/// Executes an <see cref="ExecutionPlan"/> on a kernel device (cuda, or the emulator): one device
/// allocation holds the plan's arena, every constant a kernel reads (uploaded once) and the nodes'
/// shared scratch; each node was compiled to launcher calls with resolved pointers, so a step is a flat
/// list of launches and allocates nothing. Trainable parameters change on the host between steps:
/// <see cref="UploadParameter"/> copies one to the device again.
/// </summary>
public sealed class DeviceExecutor : IPlanExecutor
{
    private readonly ExecutionPlan _plan;
    private readonly bool _ownsDevice;
    private readonly Dictionary<Value, DeviceAddress> _constants = new();
    private readonly HashSet<Value> _read;
    private readonly HashSet<Node> _planned;
    private readonly (Node Node, Action Run)[] _steps;
    private readonly List<(Node Node, string Problem)> _flags = new();
    private readonly DeviceAddress _key, _flagBase;
    private const int MaxErrorFlags = 4096;

    public IKernelDevice Device { get; }
    public DeviceMemory Memory { get; }
    public ExecutionPlan Plan => _plan;
    public string BackendName => Device.Name;
    public ulong Seed { get; set; }
    public long Step { get; set; }
    public bool Profile { get; set; }
    public Dictionary<string, double> OpSeconds { get; } = new();

    internal DeviceAddress RandomKey => _key;

    /// <param name="ownsDevice">Dispose <paramref name="device"/> with the executor.</param>
    /// <param name="separateAllocations">One allocation per tensor instead of one per plan (for memcheck and guard pages).</param>
    public DeviceExecutor(ExecutionPlan plan, IKernelDevice device, bool ownsDevice = false, bool separateAllocations = false)
    {
        _plan = plan;
        Device = device;
        _ownsDevice = ownsDevice;
        Memory = new DeviceMemory(plan.ArenaBytes, separateAllocations);
        _read = ReadValues(plan);
        _planned = plan.Steps.ToHashSet();
        _key = Memory.AddConstant(16);
        _flagBase = Memory.AddConstant(MaxErrorFlags * 4L);
        try
        {
            _steps = plan.Steps.Select(n => (n, DeviceOps.Compile(new DeviceStepBuilder(this, n)))).ToArray();
            foreach (var v in plan.Offsets.Keys) AddressOf(v); // inputs no kernel reads still get their bytes
            Memory.Allocate(device);
            UploadConstants();
        }
        catch
        {
            Memory.Dispose();
            if (ownsDevice) device.Dispose();
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
            return _constants[v] = Memory.AddConstant(ExecutionPlan.ByteSize(v));
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
        _flags.Add((node, problem));
        return _flagBase.At((_flags.Count - 1) * 4L);
    }

    private void UploadConstants()
    {
        foreach (var v in _constants.Keys) UploadParameter(v);
    }

    public void UploadParameter(Value v)
    {
        if (!_constants.TryGetValue(v, out var at)) return; // no kernel reads it
        if (v.Constant != null)
        {
            if (v.Constant.ByteLength != ExecutionPlan.ByteSize(v))
                throw new CudaDreamException($"constant '{v.Name}' holds {v.Constant.ByteLength} bytes, its value needs {ExecutionPlan.ByteSize(v)}");
            Device.CopyToDevice(at.Ptr, v.Constant.Data.Span);
        }
        else
        {
            // A splat is filled on the device: uploading it could mean a gigabyte of equal elements.
            var one = Tensor.FromArray(new[] { v.Splat!.Value }, 1).To(v.DType);
            KernelLaunchers.FillPattern(Device, at.Ptr, v.Numel, one.Data.Span);
        }
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
        CheckErrorFlags();
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var v in fetch ?? g.Outputs) result[v.Name] = Read(v);
        return result;
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
        if (_ownsDevice) Device.Dispose();
    }
}
