using CudaDream.Engine.Backends.Cpu;
using CudaDream.Engine.Backends.Device;
using CudaDream.Engine.Backends.Emu;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Ops;
using Xunit;

namespace CudaDream.Engine.Tests.Device;

/// <summary>
/// Every op of the kernel devices, forward and backward, through the device executor on the emulator
/// against the CPU reference (the matrix device-check runs on a GPU), on every emulated tier.
/// </summary>
public class DeviceConformanceTests
{
    public static IEnumerable<object[]> Cases() =>
        from tier in EmuLibrary.Tiers from c in ConformanceCases.All select new object[] { tier, c.Name };

    [Theory, MemberData(nameof(Cases))]
    public void Device_matches_cpu_reference(int tier, string name)
    {
        var c = ConformanceCases.All.Single(x => x.Name == name);
        using var device = new EmuDevice(new EmuOptions { Tier = tier });
        var r = ConformanceRunner.Run(c, device);
        Assert.True(r.Failure == null, r.Failure);
        foreach (var o in r.Outputs)
            Assert.True(o.Passed, $"{name}: output {o.Name} ({o.Type}) error {o.Error:G3} (tolerance {c.Tolerance:G2}), {o.Mismatches} elements differ");
    }

    [Fact]
    public void Every_op_the_cpu_runs_has_a_device_implementation()
    {
        var missing = OpRegistry.Names.Where(CpuOps.Supports).Where(op => !DeviceOps.Supports(op)).OrderBy(op => op).ToList();
        Assert.True(missing.Count == 0, "no device implementation: " + string.Join(", ", missing));
    }

    /// <summary>
    /// Cases that run in bf16/fp16 storage on the devices: every case whose graph has float values; integer, bool, cast
    /// and random-draw cases keep their types and are covered above.
    /// </summary>
    public static IEnumerable<object[]> ReducedCases() =>
        from dtype in new[] { "bf16", "f16" } from c in ConformanceCases.All where !c.Family.Equals("random") && HasFloatWork(c) select new object[] { dtype, c.Name };

    private static bool HasFloatWork(ConformanceCase c) =>
        c.Build(new ConformanceGraphBuilder(1)).Graph.AllValues().Any(v => v.DType == Tensors.DType.F32 && v.Producer != null)
        && !c.Name.StartsWith("Cast", StringComparison.Ordinal);

    /// <summary>The same matrix in mixed precision (emulated sm_80): within DESIGN.md's bf16/fp16 bounds of the fp32 CPU reference.</summary>
    [Theory, MemberData(nameof(ReducedCases))]
    public void Device_in_reduced_precision_matches_cpu_reference(string dtype, string name)
    {
        var compute = dtype == "bf16" ? Tensors.DType.BF16 : Tensors.DType.F16;
        var c = ConformanceCases.All.Single(x => x.Name == name);
        using var device = new EmuDevice(new EmuOptions { Tier = 800 });
        var r = ConformanceRunner.Run(c, device, compute);
        Assert.True(r.Failure == null, r.Failure);
        foreach (var o in r.Outputs)
            Assert.True(o.Passed, $"{name} in {dtype}: output {o.Name} ({o.Type}) error {o.Error:G3} (tolerance {r.Tolerance:G2}), {o.Mismatches} elements differ");
    }

    [Fact]
    public void Every_device_op_is_exercised_by_a_conformance_case()
    {
        var seen = new HashSet<string>();
        foreach (var c in ConformanceCases.All)
            foreach (var n in c.Build(new ConformanceGraphBuilder(1)).Graph.Nodes) seen.Add(n.Op);
        var untested = DeviceOps.Names.Where(op => !seen.Contains(op)).OrderBy(op => op).ToList();
        Assert.True(untested.Count == 0, "no conformance case: " + string.Join(", ", untested));
    }
}
