using CudaDream.Engine.Graph;
using CudaDream.Engine.Graph.Ops;
using CudaDream.Engine.Tensors;

namespace CudaDream.Engine.Backends.Device.Ops;

/// <summary>Reductions over any axes, ArgMax/ArgMin and Softmax (the unfused path) on kernel devices.</summary>
internal static class DeviceReduceOps
{
    private static readonly Dictionary<string, ReduceOp> Reductions = new()
    {
        ["ReduceSum"] = ReduceOp.Sum, ["ReduceMean"] = ReduceOp.Mean, ["ReduceMax"] = ReduceOp.Max, ["ReduceMin"] = ReduceOp.Min,
    };

    public static void Register(Dictionary<string, DeviceOpCompiler> t)
    {
        foreach (var (name, op) in Reductions) t[name] = s => Reduce(s, op);
        t["ArgMax"] = s => ArgReduce(s, max: true);
        t["ArgMin"] = s => ArgReduce(s, max: false);
    }

    private static Action Reduce(DeviceStepBuilder s, ReduceOp op)
    {
        s.RequireF32();
        var axes = OpSchemas.ReduceAxes(s.Node);
        var (x, y, shape) = (s.In(0), s.Out(), s.InShape(0));
        // The output keeps the other dimensions in order, so its layout does not depend on keepdims.
        return () => KernelLaunchers.ReduceAxes(s.Device, op, x.Ptr, shape, axes, y.Ptr);
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
        return () => KernelLaunchers.ArgReduce(s.Device, max, last, x.Ptr, type, y.Ptr, outer, shape[axis], inner);
    }


}
