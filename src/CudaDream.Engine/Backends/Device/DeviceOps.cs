using CudaDream.Engine.Graph;

namespace CudaDream.Engine.Backends.Device;

/// <summary>
/// Compiles one node for a kernel device: reads shapes and attributes once, reserves the memory it
/// needs, and returns the launches to run at every step (pointers already resolved).
/// </summary>
public delegate Action DeviceOpCompiler(DeviceStepBuilder step);

/// <summary>An op definition with kernels for the kernel devices (emu, cuda).</summary>
public interface IDeviceOp
{
    /// <summary>Null: the op has no device kernel (yet).</summary>
    DeviceOpCompiler? Device { get; }
}

/// <summary>The kernel devices' view of the op registry.</summary>
public static class DeviceOps
{
    public static bool Supports(string op) => OpRegistry.TryGet(op) is IDeviceOp { Device: not null };

    public static IReadOnlyCollection<string> Names => OpRegistry.Names.Where(Supports).ToList();

    public static Action Compile(DeviceStepBuilder step)
    {
        if (OpRegistry.TryGet(step.Node.Op) is not IDeviceOp { Device: { } compile })
            throw new GraphException(step.Node, $"op type '{step.Node.Op}' has no implementation on kernel devices (emu, cuda)");
        try { return compile(step); }
        catch (NotSupportedException e) { throw new GraphException(step.Node, $"not supported on {step.Device.Name}: {e.Message}"); }
        catch (ArgumentException e) { throw new GraphException(step.Node, e.Message); }
    }
}
