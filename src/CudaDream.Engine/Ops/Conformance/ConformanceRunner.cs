using System.Diagnostics;
using CudaDream.Engine.Backends;
using CudaDream.Engine.Backends.Cpu;
using CudaDream.Engine.Backends.Device;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Tensors;

namespace CudaDream.Engine.Ops;

/// <summary>How one output of a case compared: the relative error (floats) or the count of differing elements (integers, bools).</summary>
public sealed record ConformanceOutput(string Name, DType Type, double Error, long Mismatches, bool Passed);

public sealed record ConformanceResult(string Case, string Family, bool Passed, double Tolerance, double WorstError, double Seconds,
    IReadOnlyList<ConformanceOutput> Outputs, string? Failure = null);

/// <summary>
/// Runs a <see cref="ConformanceCase"/> on the CPU reference and on a kernel device and compares every
/// output. The device gets one allocation per tensor, so an out-of-bounds access of any kernel hits a
/// guard page on the emulator and memcheck's bounds under compute-sanitizer.
/// </summary>
public static class ConformanceRunner
{
    public const ulong Seed = 1234;
    public const long Step = 3;

    public static ConformanceResult Run(ConformanceCase c, IKernelDevice device)
    {
        var sw = Stopwatch.StartNew();
        try
        {
            var g = c.Build(new ConformanceGraphBuilder(StableSeed(c.Name)));
            var plan = ExecutionPlan.Create(g.Graph);
            Dictionary<string, Tensor> expected, actual;
            using (var cpu = new CpuExecutor(plan, new CpuContext { UseFastKernels = false, Seed = Seed, Step = Step }))
                expected = cpu.Run(g.Inputs);
            using (var dev = new DeviceExecutor(plan, device, separateAllocations: true) { Seed = Seed, Step = Step })
                actual = dev.Run(g.Inputs);
            var outputs = expected.Select(kv => Compare(kv.Key, kv.Value, actual[kv.Key], c.Tolerance)).ToList();
            return new ConformanceResult(c.Name, c.Family, outputs.All(o => o.Passed), c.Tolerance,
                outputs.Where(o => o.Type.IsFloat()).Select(o => o.Error).DefaultIfEmpty(0).Max(), sw.Elapsed.TotalSeconds, outputs);
        }
        catch (CudaDreamException e)
        {
            return new ConformanceResult(c.Name, c.Family, false, c.Tolerance, double.NaN, sw.Elapsed.TotalSeconds, [], e.Message);
        }
    }

    /// <summary>max |a − e| / max |e| for floats (NaN where one side is NaN and the other not); exact equality otherwise.</summary>
    public static ConformanceOutput Compare(string name, Tensor expected, Tensor actual, double tolerance)
    {
        if (!Shapes.Equal(expected.Shape, actual.Shape) || expected.DType != actual.DType)
            return new ConformanceOutput(name, expected.DType, double.PositiveInfinity, expected.Numel, false);
        if (!expected.DType.IsFloat())
        {
            var e = expected.Data.Span;
            var a = actual.Data.Span;
            long bad = 0;
            int width = expected.DType.Size();
            for (int i = 0; i < e.Length; i += width)
                if (!e.Slice(i, width).SequenceEqual(a.Slice(i, width))) bad++;
            return new ConformanceOutput(name, expected.DType, bad, bad, bad == 0);
        }
        var ef = expected.ToFloat64Array();
        var af = actual.ToFloat64Array();
        double scale = 0, worst = 0;
        long mismatches = 0;
        foreach (var v in ef) if (double.IsFinite(v)) scale = Math.Max(scale, Math.Abs(v));
        scale = Math.Max(scale, 1e-30);
        for (int i = 0; i < ef.Length; i++)
        {
            if (double.IsNaN(ef[i]) != double.IsNaN(af[i])) { worst = double.NaN; mismatches++; continue; }
            if (double.IsNaN(ef[i])) continue;
            double err = Math.Abs(ef[i] - af[i]) / scale;
            if (err > tolerance) mismatches++;
            if (!double.IsNaN(worst)) worst = Math.Max(worst, err);
        }
        return new ConformanceOutput(name, expected.DType, worst, mismatches, mismatches == 0);
    }

    /// <summary>A seed from the case name (string.GetHashCode differs between processes).</summary>
    private static int StableSeed(string name)
    {
        uint h = 2166136261;
        foreach (char ch in name) h = (h ^ ch) * 16777619;
        return (int)(h & 0x7fffffff);
    }
}
