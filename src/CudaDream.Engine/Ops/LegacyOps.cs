using CudaDream.Engine.Autodiff;
using CudaDream.Engine.Backends.Cpu;
using CudaDream.Engine.Backends.Device;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Graph.Ops;
using CudaDream.Engine.Tensors;

namespace CudaDream.Engine.Ops;

/// <summary>Ops whose parts still live in the old central tables (being moved into their homes).</summary>
internal static class LegacyOps
{
    public static OpHome Home { get; } = new("Legacy", null, Build(), () => LegacyConformanceCases.All);

    private static List<Op> Build()
    {
        var cpu = new Dictionary<string, CpuOpImpl>(StringComparer.Ordinal);
        Backends.Cpu.Ops.ElementwiseOps.Register(cpu);
        Backends.Cpu.Ops.ShapeOps.Register(cpu);
        Backends.Cpu.Ops.ReduceOps.Register(cpu);
        Backends.Cpu.Ops.GradientOpsCpu.Register(cpu);
        var dev = new Dictionary<string, DeviceOpCompiler>(StringComparer.Ordinal);
        Backends.Device.Ops.DeviceElementwiseOps.Register(dev);
        Backends.Device.Ops.DeviceShapeOps.Register(dev);
        Backends.Device.Ops.DeviceReduceOps.Register(dev);
        Backends.Device.Ops.DeviceGradientOps.Register(dev);
        return OpSchemas.Table.Values.Select(s => new Op
        {
            Name = s.Name,
            InferShapes = s.InferShapes,
            MultiplyAdds = s.MultiplyAdds,
            Deterministic = s.Deterministic,
            IsView = s.IsView,
                        Gradient = GradientRules.Table.GetValueOrDefault(s.Name),
            Cpu = cpu[s.Name],
            Device = dev.GetValueOrDefault(s.Name),
        }).ToList();
    }
}
