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
        t[FusedOps.UpsampleNearest] = s =>
        {
            s.RequireF32();
            var (planes, h, w, fy, fx) = DeviceNnOps.NearestFactors(s.Node, s.InShape(0), s.OutShape());
            var (x, y) = (s.In(0), s.Out());
            return () => KernelLaunchers.ResizeNearest(s.Device, x.Ptr, y.Ptr, planes, h, w, fy, fx);
        };
        t[FusedOps.TimestepEmbedding] = TimestepEmbedding;
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

    /// <summary>Timesteps of another type (an int64 export) are cast to fp32 in scratch first.</summary>
    private static Action TimestepEmbedding(DeviceStepBuilder s)
    {
        var a = s.Node.Attributes;
        int batch = checked((int)s.InCount(0)), dim = (int)a.Int("dim");
        bool flip = a.Int("flip_sin_to_cos", 1) != 0;
        float shift = a.Float("shift", 0f), maxPeriod = a.Float("max_period", 10000f);
        var (t, y, type) = (s.In(0), s.Out(), s.InType(0));
        var ft = type == DType.F32 ? t : s.Scratch(batch * 4L);
        if (type != DType.F32 && !KernelLaunchers.CanCast(type, DType.F32)) throw new NotSupportedException($"timesteps of type {type}");
        return () =>
        {
            if (type != DType.F32) KernelLaunchers.Cast(s.Device, t.Ptr, type, ft.Ptr, DType.F32, batch);
            KernelLaunchers.TimestepEmbedding(s.Device, ft.Ptr, y.Ptr, batch, dim, flip, shift, 1f, maxPeriod);
        };
    }
}
