using CudaDream.Engine.Autodiff;
using CudaDream.Engine.Backends.Cpu.Ops;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Graph.Ops;
using CudaDream.Engine.Tensors;

namespace CudaDream.Engine.Backends.Device.Ops;

/// <summary>The loss and backward ops (<see cref="GradientOps"/>) on kernel devices, each beside its forward kernel.</summary>
internal static class DeviceGradientOps
{
    public static void Register(Dictionary<string, DeviceOpCompiler> t)
    {
        t[GradientOps.SumTo] = SumTo;
    }

    /// <summary>Sums the axes along which the target shape was broadcast (leading extra axes, and 1s facing larger sizes).</summary>
    private static Action SumTo(DeviceStepBuilder s)
    {
        s.RequireF32();
        var shape = s.InShape(0);
        var target = s.OutShape();
        int lead = shape.Length - target.Length;
        var axes = Enumerable.Range(0, shape.Length).Where(d => d < lead || (target[d - lead] == 1 && shape[d] != 1)).ToArray();
        var (x, y) = (s.In(0), s.Out());
        return () => KernelLaunchers.ReduceAxes(s.Device, ReduceOp.Sum, x.Ptr, shape, axes, y.Ptr);
    }



}
