using CudaDream.Engine.Backends.Device.Ops;
using CudaDream.Engine.Graph;

namespace CudaDream.Engine.Backends.Device;

/// <summary>
/// Compiles one node for a kernel device: reads shapes and attributes once, reserves the memory it
/// needs, and returns the launches to run at every step (pointers already resolved).
/// </summary>
public delegate Action DeviceOpCompiler(DeviceStepBuilder step);

/// <summary>The kernel devices' op table: the same ops as <see cref="Cpu.CpuOps"/>, each a few launcher calls.</summary>
public static class DeviceOps
{
    private static readonly Dictionary<string, DeviceOpCompiler> Table = Build();

    private static Dictionary<string, DeviceOpCompiler> Build()
    {
        var t = new Dictionary<string, DeviceOpCompiler>(StringComparer.Ordinal);
        DeviceElementwiseOps.Register(t);
        DeviceShapeOps.Register(t);
        DeviceReduceOps.Register(t);
        DeviceNnOps.Register(t);
        DeviceFusedOps.Register(t);
        DeviceGradientOps.Register(t);
        return t;
    }

    public static bool Supports(string op) => Table.ContainsKey(op);

    public static IReadOnlyCollection<string> Names => Table.Keys;

    public static Action Compile(DeviceStepBuilder step)
    {
        if (!Table.TryGetValue(step.Node.Op, out var compile))
            throw new GraphException(step.Node, $"op type '{step.Node.Op}' has no implementation on kernel devices (emu, cuda)");
        try { return compile(step); }
        catch (NotSupportedException e) { throw new GraphException(step.Node, $"not supported on {step.Device.Name}: {e.Message}"); }
        catch (ArgumentException e) { throw new GraphException(step.Node, e.Message); }
    }
}
