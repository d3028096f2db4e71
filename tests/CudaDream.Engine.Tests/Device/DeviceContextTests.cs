using CudaDream.Engine.Backends.Cpu;
using CudaDream.Engine.Backends.Device;
using CudaDream.Engine.Backends.Emu;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Ops;
using CudaDream.Engine.Tensors;
using CudaDream.TestSupport;
using Xunit;

namespace CudaDream.Engine.Tests.Device;

/// <summary>One device context for many executors: frozen weights resident once, trained tensors never merged by content.</summary>
public class DeviceContextTests
{
    /// <summary>The same network built twice from the same seed: equal weights in distinct host tensors, as two loads of one model file.</summary>
    private static ConformanceGraph Network(int seed, out Value w)
    {
        var b = new ConformanceGraphBuilder(seed);
        var x = b.Input(4, 64);
        w = b.Const(b.Floats([64, 64]), "w");
        var h = b.Node1(MatMulOps.Linear, [x, w, b.Const(b.Floats([64]), "b")]);
        return b.Build(b.Node1(MatMulOps.Linear, [h, b.Const(b.Floats([64, 32]), "w2")]));
    }

    [Fact]
    public void Two_loads_of_the_same_weights_are_resident_once()
    {
        var first = Network(31, out var w1);
        var second = Network(31, out var w2);
        Assert.NotSame(w1.Constant, w2.Constant);
        using var device = new EmuDevice();
        using var context = new DeviceContext(device);
        using var a = new DeviceExecutor(ExecutionPlan.Create(first.Graph), context);
        long once = context.ResidentBytes;
        long allocatedOnce = device.Counters.AllocatedBytes;
        using var b = new DeviceExecutor(ExecutionPlan.Create(second.Graph), context);
        // Only constants below the content-sharing threshold (the 256-byte bias) are held twice.
        Assert.InRange(context.ResidentBytes - once, 0, 1024);
        Assert.True(context.SharedConstants >= 2, $"{context.SharedConstants} shared");
        Assert.InRange(once, (64 * 64 + 64 * 32) * 4, (64 * 64 + 64 * 32) * 4 + 4096); // the two weights, the bias, alignment
        Assert.True(device.Counters.AllocatedBytes - allocatedOnce < once / 2, "the second executor allocated a copy of the weights");
        using var cpu = new CpuExecutor(ExecutionPlan.Create(first.Graph));
        var want = cpu.Run(first.Inputs).Values.Single();
        TensorAssert.Close(want, a.Run(first.Inputs).Values.Single(), 1e-5);
        TensorAssert.Close(want, b.Run(second.Inputs).Values.Single(), 1e-5);
    }

    [Fact]
    public void Mutable_tensors_are_shared_by_reference_only_and_refreshed_once()
    {
        var first = Network(32, out var w1);
        var second = Network(32, out var w2);
        using var device = new EmuDevice();
        using var context = new DeviceContext(device);
        context.MarkMutable(w1.Constant!);
        context.MarkMutable(w2.Constant!);
        using var a = new DeviceExecutor(ExecutionPlan.Create(first.Graph), context);
        using var b = new DeviceExecutor(ExecutionPlan.Create(second.Graph), context);
        Assert.NotEqual(a.Address(w1), b.Address(w2)); // equal bytes, but trained: two buffers

        // The second graph reads the first's trained tensor itself (what an evaluation forward does).
        var third = Network(32, out var w3);
        w3.Constant = w1.Constant;
        using var c = new DeviceExecutor(ExecutionPlan.Create(third.Graph), context);
        Assert.Equal(a.Address(w1), c.Address(w3));
        foreach (ref var v in w1.Constant!.Span<float>()) v = -v;
        long uploads = context.ParameterUploads;
        a.UploadParameter(w1);
        Assert.Equal(uploads + 1, context.ParameterUploads);
        using var cpu = new CpuExecutor(ExecutionPlan.Create(third.Graph));
        TensorAssert.Close(cpu.Run(third.Inputs).Values.Single(), c.Run(third.Inputs).Values.Single(), 1e-5, "the refreshed tensor, seen by the sharer");
    }

    [Fact]
    public void Rewriting_a_frozen_weight_after_upload_is_an_error()
    {
        var g = Network(33, out var w);
        using var context = new DeviceContext(new EmuDevice(), ownsDevice: true);
        using var e = new DeviceExecutor(ExecutionPlan.Create(g.Graph), context);
        var error = Assert.Throws<CudaDreamException>(() => e.UploadParameter(w));
        Assert.Contains("not marked mutable", error.Message);
    }
}
