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
        t[GradientOps.LinearGradWeight] = LinearGradWeight;
        t[GradientOps.SumTo] = SumTo;
        t[GradientOps.ConvGradInput] = s => ConvGrad(s, input: true);
        t[GradientOps.ConvGradWeight] = s => ConvGrad(s, input: false);
    }

    /// <summary>dW = α·xᵀ·dy over all leading rows (stored [K,N]), or α·dyᵀ·x (stored [N,K]).</summary>
    private static Action LinearGradWeight(DeviceStepBuilder s)
    {
        s.RequireF32();
        int k = s.InShape(0)[^1], n = s.InShape(1)[^1];
        int rows = checked((int)(s.InCount(0) / Math.Max(k, 1)));
        float alpha = s.Node.Attributes.Float("alpha", 1f);
        bool tb = s.Node.Attributes.Int("transB", 0) != 0;
        var (x, dy, dw) = (s.In(0), s.In(1), s.Out());
        if (tb) return () => KernelLaunchers.MatMul(s.Device, true, false, n, k, rows, dy.Ptr, x.Ptr, dw.Ptr, alpha);
        return () => KernelLaunchers.MatMul(s.Device, true, false, k, n, rows, x.Ptr, dy.Ptr, dw.Ptr, alpha);
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

    private static Action ConvGrad(DeviceStepBuilder s, bool input)
    {
        s.RequireF32();
        var g = GradientOpsCpu.Geometry(s.Node);
        var col = s.Scratch(Math.Max(1, KernelLaunchers.Conv2dWorkspaceElements(g)) * 4);
        var result = s.Out();
        if (input)
        {
            var (dy, w) = (s.In(0), s.In(1));
            return () => KernelLaunchers.Conv2dBackward(s.Device, g, DevicePtr.Null, w.Ptr, dy.Ptr, result.Ptr, DevicePtr.Null, DevicePtr.Null, col.Ptr);
        }
        var (x, dyw) = (s.In(0), s.In(1));
        return () => KernelLaunchers.Conv2dBackward(s.Device, g, x.Ptr, DevicePtr.Null, dyw.Ptr, DevicePtr.Null, result.Ptr, DevicePtr.Null, col.Ptr);
    }


}
