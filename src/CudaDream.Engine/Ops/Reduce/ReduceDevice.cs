using CudaDream.Engine.Backends;
using CudaDream.Engine.Backends.Cpu;
using CudaDream.Engine.Backends.Device;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Tensors;

namespace CudaDream.Engine.Ops;

/// <summary>Reductions over any axes, ArgMax/ArgMin and Softmax (the unfused path) on kernel devices.</summary>
internal static class ReduceDevice
{
    private static readonly Dictionary<string, ReduceOp> Reductions = new()
    {
        ["ReduceSum"] = ReduceOp.Sum, ["ReduceMean"] = ReduceOp.Mean, ["ReduceMax"] = ReduceOp.Max, ["ReduceMin"] = ReduceOp.Min,
    };

    public static Dictionary<string, DeviceOpCompiler> Table { get; } = Register();

    private static Dictionary<string, DeviceOpCompiler> Register()
    {
        var t = new Dictionary<string, DeviceOpCompiler>(StringComparer.Ordinal);
        foreach (var (name, op) in Reductions) t[name] = s => Reduce(s, op);
        t["ArgMax"] = s => ArgReduce(s, max: true);
        t["ArgMin"] = s => ArgReduce(s, max: false);
        t[GradBuilder.SumToOp] = SumTo;
        return t;
    }

    private static Action Reduce(DeviceStepBuilder s, ReduceOp op)
    {
        s.RequireFloat();
        var axes = ReduceOps.ReduceAxes(s.Node);
        var (x, y, shape, t) = (s.In(0), s.Out(), s.InShape(0), s.InType(0));
        // The output keeps the other dimensions in order, so its layout does not depend on keepdims.
        return () => ReduceKernels.ReduceAxes(s.Device, op, x.Ptr, shape, axes, y.Ptr, t);
    }

    private static Action ArgReduce(DeviceStepBuilder s, bool max)
    {
        var shape = s.InShape(0);
        int axis = Shapes.Axis(s.Node.Attributes.Int("axis", 0), shape.Length);
        bool last = s.Node.Attributes.Int("select_last_index", 0) != 0;
        long outer = 1;
        for (int d = 0; d < axis; d++) outer *= shape[d];
        long inner = Shapes.Numel(shape.AsSpan(axis + 1));
        var (x, y, type) = (s.In(0), s.Out(), s.InType(0));
        return () => ReduceKernels.ArgReduce(s.Device, max, last, x.Ptr, type, y.Ptr, outer, shape[axis], inner);
    }

    /// <summary>Sums the axes along which the target shape was broadcast (leading extra axes, and 1s facing larger sizes).</summary>
    private static Action SumTo(DeviceStepBuilder s)
    {
        s.RequireFloat();
        var shape = s.InShape(0);
        var target = s.OutShape();
        int lead = shape.Length - target.Length;
        var axes = Enumerable.Range(0, shape.Length).Where(d => d < lead || (target[d - lead] == 1 && shape[d] != 1)).ToArray();
        var (x, y, t) = (s.In(0), s.Out(), s.InType(0));
        return () => ReduceKernels.ReduceAxes(s.Device, ReduceOp.Sum, x.Ptr, shape, axes, y.Ptr, t);
    }
}
