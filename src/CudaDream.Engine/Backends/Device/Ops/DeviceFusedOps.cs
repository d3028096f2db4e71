using CudaDream.Engine.Backends.Cpu.Kernels;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Graph.Ops;
using CudaDream.Engine.Tensors;

namespace CudaDream.Engine.Backends.Device.Ops;

/// <summary>
/// The fused ops (<see cref="FusedOps"/>) on kernel devices. Normalisation and attention nodes may
/// carry extra outputs for the statistics the backward pass reuses; without readers those go to scratch.
/// </summary>
internal static class DeviceFusedOps
{
    public static void Register(Dictionary<string, DeviceOpCompiler> t)
    {
        t[FusedOps.Linear] = Linear;
    }

    /// <summary>y = alpha·x·W + bias: the bias is broadcast into y, then one GEMM accumulates onto it (beta = 1).</summary>
    private static Action Linear(DeviceStepBuilder s)
    {
        s.RequireF32();
        var (k, n) = FusedOps.LinearDims(s.Node);
        bool tb = s.Node.Attributes.Int("transB", 0) != 0;
        float alpha = s.Node.Attributes.Float("alpha", 1f);
        int rows = checked((int)(s.InCount(0) / k));
        var (x, w, y) = (s.In(0), s.In(1), s.Out());
        Action? bias = s.HasInput(2)
            ? DeviceShapeOps.Copy(s, s.In(2), 0, new long[] { 0, 1 }, y, 0, new long[] { n, 1 }, new[] { rows, n })
            : null;
        return () =>
        {
            bias?.Invoke();
            KernelLaunchers.MatMul(s.Device, false, tb, rows, n, k, x.Ptr, w.Ptr, y.Ptr, alpha, bias != null ? 1 : 0);
        };
    }


}
