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

    /// <summary>
    /// Runs the case on the CPU reference (fp32, the reference loops) and on <paramref name="device"/> in <paramref name="compute"/>:
    /// fp32, or bf16/fp16 — the same case rewritten by <see cref="MixedPrecision"/>, its outputs widened to fp32 and held to
    /// DESIGN.md's reduced-precision bound (<see cref="ReducedTolerance"/>) instead of the case's fp32 one.
    /// </summary>
    public static ConformanceResult Run(ConformanceCase c, IKernelDevice device, DType compute = DType.F32)
    {
        var sw = Stopwatch.StartNew();
        double tolerance = compute == DType.F32 ? c.Tolerance : ReducedTolerance(compute);
        try
        {
            var reference = c.Build(new ConformanceGraphBuilder(StableSeed(c.Name)));
            var g = compute == DType.F32 ? reference : c.Build(new ConformanceGraphBuilder(StableSeed(c.Name), compute));
            Dictionary<string, Tensor> expected, actual;
            using (var cpu = new CpuExecutor(ExecutionPlan.Create(reference.Graph), new CpuContext { UseFastKernels = false, Seed = Seed, Step = Step }))
                expected = cpu.Run(reference.Inputs);
            using (var dev = new DeviceExecutor(ExecutionPlan.Create(g.Graph), device, separateAllocations: true) { Seed = Seed, Step = Step })
                actual = dev.Run(g.Inputs);
            var outputs = expected.Select(kv => compute != DType.F32 && kv.Key.EndsWith(".grad", StringComparison.Ordinal)
                ? CompareDirection(kv.Key, kv.Value, Widened(actual[kv.Key], kv.Value.DType), MinGradientCosine)
                : Compare(kv.Key, kv.Value, Widened(actual[kv.Key], kv.Value.DType), tolerance)).ToList();
            return new ConformanceResult(c.Name, c.Family, outputs.All(o => o.Passed), tolerance,
                outputs.Where(o => o.Type.IsFloat()).Select(o => o.Error).DefaultIfEmpty(0).Max(), sw.Elapsed.TotalSeconds, outputs);
        }
        catch (CudaDreamException e)
        {
            return new ConformanceResult(c.Name, c.Family, false, tolerance, double.NaN, sw.Elapsed.TotalSeconds, [], e.Message);
        }
    }

    /// <summary>DESIGN.md: a gradient computed in bf16/fp16 points where the fp32 one does, cosine similarity ≥ 0.999.</summary>
    public const double MinGradientCosine = 0.999;

    /// <summary>
    /// A reduced-precision gradient against the fp32 one by direction: Error = 1 − cos(expected, actual), passing when the
    /// cosine reaches <paramref name="minCosine"/>. (Elementwise bounds do not fit gradients that are differences of
    /// nearly equal numbers, such as a softmax's: their size relative to max|ref| is set by cancellation, not by the kernels.)
    /// </summary>
    public static ConformanceOutput CompareDirection(string name, Tensor expected, Tensor actual, double minCosine)
    {
        if (!Shapes.Equal(expected.Shape, actual.Shape) || expected.DType != actual.DType)
            return new ConformanceOutput(name, expected.DType, double.PositiveInfinity, expected.Numel, false);
        var e = expected.ToFloat64Array();
        var a = actual.ToFloat64Array();
        double dot = 0, ee = 0, aa = 0;
        for (int i = 0; i < e.Length; i++) { dot += e[i] * a[i]; ee += e[i] * e[i]; aa += a[i] * a[i]; }
        double cosine = ee == 0 && aa == 0 ? 1 : dot / Math.Sqrt(ee * aa);
        bool passed = double.IsFinite(cosine) && cosine >= minCosine;
        return new ConformanceOutput(name, expected.DType, double.IsFinite(cosine) ? 1 - cosine : double.NaN, passed ? 0 : e.Length, passed);
    }

    /// <summary>DESIGN.md's bound for a reduced-precision result: max |device − cpu| ≤ 2e-2·max|cpu| in bf16, 5e-3·max|cpu| in fp16.</summary>
    public static double ReducedTolerance(DType compute) => compute switch
    {
        DType.BF16 => 2e-2,
        DType.F16 => 5e-3,
        _ => throw new ArgumentException($"{compute} is not a reduced precision"),
    };

    private static Tensor Widened(Tensor actual, DType expected) =>
        actual.DType != expected && MixedPrecision.IsReduced(actual.DType) && expected.IsFloat() ? actual.To(expected) : actual;

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
