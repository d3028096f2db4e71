using System.Runtime.InteropServices;
using CudaDream.Engine.Backends;
using CudaDream.Engine.Backends.Cpu;
using CudaDream.Engine.Backends.Device;
using CudaDream.Engine.Backends.Emu;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Ops;
using CudaDream.Engine.Tensors;
using CudaDream.TestSupport;
using Xunit;

namespace CudaDream.Engine.Tests.Device;

/// <summary>
/// Stream capture and the device counters on the emulator: a captured run replays what a plain run computes, reading
/// the staged inputs as they are at replay; what a capture cannot hold is refused; every call is counted.
/// </summary>
public class DeviceCaptureTests
{
    private static ConformanceGraph SmallNetwork(int seed)
    {
        var b = new ConformanceGraphBuilder(seed);
        var x = b.Input(2, 8, 3, 3);
        var y = b.Node(GroupNormOps.GroupNorm, [x, b.Const(b.Floats([8])), b.Const(b.Floats([8]))], 3, a => { a.Set("groups", 2L); a.Set("epsilon", 1e-5f); a.Set("silu", 1L); })[0];
        return b.Build(b.Node1(MatMulOps.Linear, [y, b.Const(b.Floats([3, 16]), "w"), b.Const(b.Floats([16]), "bias")]));
    }

    [Fact]
    public void A_captured_run_replays_with_the_inputs_staged_at_replay_time()
    {
        var g = SmallNetwork(21);
        var plan = ExecutionPlan.Create(g.Graph);
        using var device = new EmuDevice();
        using var executor = new DeviceExecutor(plan, device);
        var input = g.Graph.Inputs.Single();
        var output = g.Graph.Outputs.Single();
        long inBytes = ExecutionPlan.ByteSize(input), outBytes = ExecutionPlan.ByteSize(output);
        using var staging = device.AllocateHost(inBytes + 16 + outBytes);
        var inputs = new Dictionary<string, DeviceInput> { [input.Name] = new DeviceInput.Staged(staging, 0) };

        device.BeginCapture();
        executor.Enqueue(inputs, new DeviceInput.Staged(staging, inBytes));
        device.CopyToHostAsync(staging, inBytes + 16, executor.Address(output), outBytes);
        using var graph = device.EndCapture();
        Assert.Equal(0, device.Counters.Counts.Launches); // nothing ran while capturing
        Assert.True(graph.PerReplay.Launches >= 2);
        Assert.Equal(inBytes + 16, graph.PerReplay.HostToDeviceBytes);
        Assert.Equal(outBytes, graph.PerReplay.DeviceToHostBytes);
        Assert.Equal(0, graph.PerReplay.Synchronizations);

        using var cpu = new CpuExecutor(plan);
        var before = device.Counters.Counts;
        for (int round = 0; round < 3; round++)
        {
            var x = new ConformanceGraphBuilder(100 + round).Floats(input.Shape!);
            x.Data.Span.CopyTo(staging.Span(0, inBytes));
            staging.Span(inBytes, 16).Clear();
            graph.Replay();
            device.Synchronize();
            var got = Tensor.FromSpan(DType.F32, MemoryMarshal.Cast<byte, float>(staging.Span(inBytes + 16, outBytes)), output.Shape!);
            var want = cpu.Run(new Dictionary<string, Tensor> { [input.Name] = x }).Values.Single();
            TensorAssert.Close(want, got, 1e-5, $"replay {round}");
        }
        var per = (device.Counters.Counts - before).Per(3);
        Assert.Equal(1, per.GraphReplays);
        Assert.Equal(1, per.Synchronizations);
        Assert.Equal(graph.PerReplay.Launches, per.Launches);
    }

    [Fact]
    public void What_a_capture_cannot_hold_is_refused_like_on_a_gpu()
    {
        using var device = new EmuDevice();
        using var buffer = device.Allocate(64);
        device.BeginCapture();
        Assert.Throws<DeviceCaptureException>(() => device.Synchronize());
        Assert.Throws<DeviceCaptureException>(() => device.Allocate(16));
        Assert.Throws<DeviceCaptureException>(() => device.CopyToDevice(buffer.Ptr, new byte[8]));
        Assert.Throws<DeviceCaptureException>(() => device.CopyToHost(new byte[8], buffer.Ptr));
        Assert.Throws<DeviceCaptureException>(() => device.BeginCapture());
        device.EndCapture().Dispose();
        Assert.Throws<DeviceCaptureException>(() => device.EndCapture());
        device.Synchronize(); // allowed again
    }

    [Fact]
    public void A_plain_run_counts_one_wait_per_pageable_copy_and_the_bytes()
    {
        var g = SmallNetwork(22);
        using var device = new EmuDevice();
        using var executor = new DeviceExecutor(ExecutionPlan.Create(g.Graph), device);
        var before = device.Counters.Counts;
        executor.Run(g.Inputs);
        var c = device.Counters.Counts - before;
        long inBytes = g.Inputs.Values.Single().ByteLength, outBytes = ExecutionPlan.ByteSize(g.Graph.Outputs.Single());
        Assert.Equal(inBytes + 16, c.HostToDeviceBytes); // the input and the random key
        Assert.Equal(outBytes, c.DeviceToHostBytes);
        Assert.Equal(3 + 1, c.Synchronizations);          // two uploads and a download wait, and Read's sync before it
        Assert.True(c.Launches >= 2 && c.Gemms >= 1, $"{c}");
        Assert.True(device.Counters.PeakAllocatedBytes >= device.Counters.AllocatedBytes);
    }
}
