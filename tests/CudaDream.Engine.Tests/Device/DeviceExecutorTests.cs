using CudaDream.Engine;
using CudaDream.Engine.Backends;
using CudaDream.Engine.Backends.Cpu;
using CudaDream.Engine.Backends.Device;
using CudaDream.Engine.Backends.Emu;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Ops;
using CudaDream.Engine.Tensors;
using CudaDream.Engine.Training;
using CudaDream.TestSupport;
using Xunit;

namespace CudaDream.Engine.Tests.Device;

/// <summary>The device executor's contract: one allocation per plan, constants uploaded once, parameters re-uploaded on request, errors named.</summary>
public class DeviceExecutorTests
{
    [Fact]
    public void A_plan_is_one_allocation_and_constants_are_uploaded_once()
    {
        var b = new ConformanceGraphBuilder(5);
        var x = b.Input(2, 8, 3, 3);
        var y = b.Node(GroupNormOps.GroupNorm, [x, b.Const(b.Floats([8])), b.Const(b.Floats([8]))], 3, a => { a.Set("groups", 2L); a.Set("epsilon", 1e-5f); })[0];
        var g = b.Build(b.Node1(MatMulOps.Linear, [y, b.Const(b.Floats([3, 4]), "w")]));
        var plan = ExecutionPlan.Create(g.Graph);
        using var device = new EmuDevice();
        using var executor = new DeviceExecutor(plan, device);
        // The plan's arena (with run state and scratch) and one slab of its context's resident constants.
        Assert.Equal(2, device.Counters.LiveAllocations);
        long afterSetup = device.Counters.Counts.HostToDeviceBytes;
        var first = executor.Run(g.Inputs);
        long perRun = device.Counters.Counts.HostToDeviceBytes - afterSetup;
        executor.Run(g.Inputs);
        Assert.Equal(2, device.Counters.LiveAllocations);
        // A run uploads the input and the random key only, never the weights again.
        Assert.Equal(2 * 8 * 3 * 3 * 4 + 16, perRun);
        Assert.Equal(2 * perRun, device.Counters.Counts.HostToDeviceBytes - afterSetup);
        using var cpu = new CpuExecutor(plan);
        TensorAssert.Close(cpu.Run(g.Inputs).Values.Single(), first.Values.Single(), 1e-5);
    }

    [Fact]
    public void A_changed_parameter_is_seen_after_ParametersUpdated_only()
    {
        var b = new ConformanceGraphBuilder(6);
        var x = b.Input(4, 6);
        var w = b.Const(b.Floats([6, 3]), "w");
        var g = b.Build(b.Node1(MatMulOps.Linear, [x, w]));
        var training = TrainingGraph.Build(g.Graph, [w]);
        var inputs = new Dictionary<string, Tensor>(g.Inputs) { [TrainingGraph.TargetInput] = b.Floats([4, 3]) };
        using var device = new TrainingSession(training, ExecutionBackend.Parse("emu"));
        using var cpu = new TrainingSession(training);
        var before = device.Run(inputs);
        foreach (ref var v in w.Constant!.Span<float>()) v *= -2; // what an optimizer step does to the host tensor
        var stale = device.Run(inputs);
        Assert.Equal(before.Loss, stale.Loss);
        device.ParametersUpdated();
        var updated = device.Run(inputs);
        var reference = cpu.Run(inputs);
        Assert.NotEqual(before.Loss, updated.Loss);
        Assert.Equal(reference.Loss, updated.Loss, 5);
        TensorAssert.Close(cpu.Gradient(training.Parameters[0]), device.Gradient(training.Parameters[0]), 1e-5, "w.grad");
    }

    [Fact]
    public void An_out_of_range_gather_index_fails_the_run_naming_the_node()
    {
        var b = new ConformanceGraphBuilder(7);
        var table = b.Const(b.Floats([10, 4]));
        var g = b.Build(b.Node1("Gather", [table, b.Input(Tensor.FromArray([3L, 10], 2), "ids")]));
        using var executor = new DeviceExecutor(ExecutionPlan.Create(g.Graph), new EmuDevice(), ownsDevice: true);
        var e = Assert.Throws<GraphException>(() => executor.Run(g.Inputs));
        Assert.Contains("(Gather)", e.Message);
        Assert.Contains("out of range for dimension 10", e.Message);
        g.Inputs["ids"] = Tensor.FromArray([3L, -10], 2); // negative indices count from the end
        using var cpu = new CpuExecutor(executor.Plan);
        TensorAssert.Close(cpu.Run(g.Inputs).Values.Single(), executor.Run(g.Inputs).Values.Single(), 0);
    }

    [Fact]
    public void A_float64_graph_is_refused_with_the_node_named()
    {
        var b = new ConformanceGraphBuilder(8);
        var x = b.Input(Tensor.FromArray([1.0, 2.0], 2));
        var g = b.Build(b.Node1("Exp", [x]));
        using var device = new EmuDevice();
        var e = Assert.Throws<GraphException>(() => new DeviceExecutor(ExecutionPlan.Create(g.Graph), device));
        Assert.Contains("(Exp)", e.Message);
        Assert.Contains("F64", e.Message);
    }
}
