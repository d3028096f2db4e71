using CudaDream.Engine.Backends.Cpu;
using CudaDream.Engine.Backends.Device;
using CudaDream.Engine.Graph;

namespace CudaDream.Engine.Ops;

/// <summary>
/// One op as its home defines it: the graph-level facts of <see cref="OpDef"/> (shape rule, saved outputs,
/// gradient rule) and its implementation on every backend — the CPU (reference loops, fast kernels behind
/// them) and the kernel devices (the launcher calls of kernels/&lt;home&gt;.cu). Executors find it in the
/// <see cref="OpRegistry"/> by name and use the part they understand.
/// </summary>
public sealed class Op : OpDef, ICpuOp, IDeviceOp
{
    public required CpuOpImpl Cpu { get; init; }
    public DeviceOpCompiler? Device { get; init; }
}

/// <summary>
/// An op home (<c>Engine/Ops/&lt;Name&gt;/</c>): the ops that share kernels — a forward op and its backward,
/// or a family such as elementwise arithmetic — with the conformance cases that check their device kernels
/// against the CPU. <see cref="KernelFile"/> is kernels/&lt;file&gt;.cu, named like the home.
/// </summary>
public sealed record OpHome(string Name, string? KernelFile, IReadOnlyList<Op> Ops, Func<IEnumerable<ConformanceCase>>? Conformance = null)
{
    public override string ToString() => Name;
}
