using CudaDream.Engine.Graph;
using CudaDream.Engine.Tensors;

namespace CudaDream.Engine.Backends.Device;

/// <summary>What an op compiler sees of its node: device addresses of inputs and outputs, shapes, scratch.</summary>
public sealed class DeviceStepBuilder
{
    private readonly DeviceExecutor _executor;
    private long _scratchCursor;

    internal DeviceStepBuilder(DeviceExecutor executor, Node node)
    {
        _executor = executor;
        Node = node;
    }

    public Node Node { get; }
    public IKernelDevice Device => _executor.Device;

    /// <summary>Address of input <paramref name="i"/>; <see cref="DeviceAddress.Null"/> when the optional input is absent.</summary>
    public DeviceAddress In(int i) => i < Node.Inputs.Count && Node.Inputs[i] is { } v ? _executor.AddressOf(v) : DeviceAddress.Null;

    public DeviceAddress Out(int i = 0) => i < Node.Outputs.Count ? _executor.AddressOf(Node.Outputs[i]) : DeviceAddress.Null;

    public bool HasInput(int i) => i < Node.Inputs.Count && Node.Inputs[i] != null;

    public Value Input(int i) => Node.Input(i);

    public int[] InShape(int i) => Node.Input(i).Shape!;
    public int[] OutShape(int i = 0) => Node.Outputs[i].Shape!;
    public DType InType(int i) => Node.Input(i).DType;
    public DType OutType(int i = 0) => Node.Outputs[i].DType;
    public long InCount(int i) => Node.Input(i).Numel;
    public long OutCount(int i = 0) => Node.Outputs[i].Numel;

    /// <summary>True when output <paramref name="i"/> exists and something reads it (a later node or the caller).</summary>
    public bool IsUsed(int i) => i < Node.Outputs.Count && _executor.IsRead(Node.Outputs[i]);

    /// <summary>The host data of a constant input (shape operands, Clip bounds, Pad values); throws for runtime values.</summary>
    public Tensor HostConstant(int i)
    {
        var v = Node.Input(i);
        if (v.Constant != null) return v.Constant;
        if (v.Splat != null) return Specializer.MaterializeSplat(v);
        throw new GraphException(Node, $"input '{v.Name}' must be a constant on kernel devices");
    }

    /// <summary>Workspace for this node only (later nodes reuse the bytes), 256-byte aligned.</summary>
    public DeviceAddress Scratch(long bytes)
    {
        long at = MemoryPlanner.Align(_scratchCursor, 256);
        _scratchCursor = at + Math.Max(bytes, 1);
        return _executor.Memory.ScratchArea(at, bytes);
    }

    /// <summary>Output <paramref name="i"/> when something reads it, else <paramref name="bytes"/> of scratch (statistics nobody reads).</summary>
    public DeviceAddress OutOrScratch(int i, long bytes) => IsUsed(i) ? Out(i) : Scratch(bytes);

    /// <summary>Device memory holding (seed, step) as two u64, written before every run.</summary>
    public DeviceAddress RandomKey => _executor.RandomKey;

    /// <summary>An int flag of this node that a kernel sets on a bad index; checked after every run.</summary>
    public DeviceAddress ErrorFlag(string problem) => _executor.AddErrorFlag(Node, problem);

    /// <summary>Requires a floating-point element type the kernels are instantiated for (fp32, bf16, fp16) for input <paramref name="i"/>.</summary>
    public void RequireFloat(int i = 0)
    {
        if (InType(i) is not (DType.F32 or DType.BF16 or DType.F16)) throw new NotSupportedException($"{Node.Op} on {InType(i)} (kernel devices compute in fp32, bf16 or fp16)");
    }
}
