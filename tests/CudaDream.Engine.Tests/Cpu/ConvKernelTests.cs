using System.Diagnostics;
using CudaDream.Engine.Backends.Cpu.Kernels;
using CudaDream.Engine.Ops;
using Xunit;
using Xunit.Abstractions;
using static CudaDream.Engine.Tests.Cpu.KernelTestSupport;

namespace CudaDream.Engine.Tests.Cpu;

[Collection(ThreadCountCollection.Name)]
public class ConvKernelTests(ITestOutputHelper output)
{
    /// <summary>The convolutions SD uses plus the general cases (asymmetric pads, dilation, groups) at odd sizes.</summary>
    public static TheoryData<string, Conv2dGeometry> Geometries() => new()
    {
        { "1x1", new Conv2dGeometry(2, 5, 7, 6, 9, 1, 1) },
        { "3x3 pad 1", new Conv2dGeometry(2, 3, 7, 9, 5, 3, 3, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1) },
        { "3x3 stride 2 pad 1", new Conv2dGeometry(3, 4, 9, 8, 6, 3, 3, 2, 2, 1, 1, 1, 1) },
        { "3x3 stride 2 pad 0", new Conv2dGeometry(2, 4, 9, 9, 3, 3, 3, 2, 2) },
        { "asymmetric pads", new Conv2dGeometry(1, 3, 6, 7, 4, 3, 2, 1, 1, PadTop: 0, PadLeft: 2, PadBottom: 1, PadRight: 0) },
        { "dilation 2, stride (2,1)", new Conv2dGeometry(2, 2, 9, 8, 3, 3, 3, 2, 1, 2, 1, 2, 1, DilationH: 2, DilationW: 2) },
        { "groups 3", new Conv2dGeometry(2, 6, 5, 5, 9, 3, 3, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1, Groups: 3) },
        { "1x1 stride 2", new Conv2dGeometry(2, 3, 7, 7, 4, 1, 1, 2, 2) },
        { "pads wider than the image", new Conv2dGeometry(1, 2, 3, 2, 3, 3, 3, PadTop: 2, PadLeft: 3, PadBottom: 2, PadRight: 3) },
        { "asymmetric pads within the kernel's reach", new Conv2dGeometry(2, 3, 6, 7, 4, 3, 2, PadTop: 2, PadLeft: 0, PadBottom: 0, PadRight: 1) },
        { "dilation (2,3), stride 1", new Conv2dGeometry(2, 3, 9, 10, 4, 3, 3, PadTop: 2, PadLeft: 3, PadBottom: 2, PadRight: 3, DilationH: 2, DilationW: 3) },
        { "3x3 pad 1, batch 3, 17→11, odd output height", new Conv2dGeometry(3, 17, 5, 6, 11, 3, 3, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1) },
    };

    [Fact]
    public void Reference_forward_matches_a_hand_computed_convolution()
    {
        // x = 1..9 as a 3×3 image, w = [[1,0],[0,-1]] (2×2), pad 0: y[i,j] = x[i,j] − x[i+1,j+1] = −4 everywhere.
        // With bias 0.5 and one zero row/column padded at the top and left only (3×3 output):
        // y[i,j] = P[i,j] − P[i+1,j+1] + 0.5 on the padded image P, e.g. y[0,1] = 0 − 2 + 0.5, y[2,0] = 0 − 7 + 0.5.
        double[] x = [1, 2, 3, 4, 5, 6, 7, 8, 9], w = [1, 0, 0, -1];
        var y = new double[4];
        ConvReference.Conv2dForward(new Conv2dGeometry(1, 1, 3, 3, 1, 2, 2), x, w, ReadOnlySpan<double>.Empty, y);
        Assert.Equal(new double[] { -4, -4, -4, -4 }, y);
        var g = new Conv2dGeometry(1, 1, 3, 3, 1, 2, 2, PadTop: 1, PadLeft: 1);
        var yp = new double[g.OutHeight * g.OutWidth];
        ConvReference.Conv2dForward(g, x, w, new double[] { 0.5 }, yp);
        Assert.Equal(3, g.OutHeight);
        Assert.Equal(new double[] { -0.5, -1.5, -2.5, -3.5, -3.5, -3.5, -6.5, -3.5, -3.5 }, yp);
    }

    [Theory]
    [MemberData(nameof(Geometries))]
    public void Reference_backward_matches_finite_differences(string name, Conv2dGeometry g)
    {
        var x = RandomDoubles(1, (int)g.InputLength);
        var w = RandomDoubles(2, (int)g.WeightLength);
        var bias = RandomDoubles(3, g.OutChannels);
        var r = RandomDoubles(4, (int)g.OutputLength); // L = Σ r ⊙ y, so dy = r
        var y = new double[g.OutputLength];
        double Loss()
        {
            ConvReference.Conv2dForward(g, x, w, bias, y);
            return Dot(r, y);
        }
        var dx = new double[x.Length];
        var dw = new double[w.Length];
        var db = new double[bias.Length];
        ConvReference.Conv2dBackwardData(g, r, w, dx);
        ConvReference.Conv2dBackwardWeight(g, x, r, dw);
        ConvReference.Conv2dBackwardBias(g, r, db);
        CheckGradient(name + " dx", x, dx, Loss);
        CheckGradient(name + " dw", w, dw, Loss);
        CheckGradient(name + " dbias", bias, db, Loss);
    }

    [Theory]
    [MemberData(nameof(Geometries))]
    public void Fast_matches_reference(string name, Conv2dGeometry g)
    {
        var x = RandomFloats(1, (int)g.InputLength);
        var w = RandomFloats(2, (int)g.WeightLength);
        var bias = RandomFloats(3, g.OutChannels);
        var dy = RandomFloats(4, (int)g.OutputLength);
        var yRef = new float[g.OutputLength];
        var yFast = new float[g.OutputLength];
        ConvReference.Conv2dForward(g, x, w, bias, yRef);
        ConvFast.Conv2dForward(g, x, w, bias, yFast);
        AssertClose(yRef, yFast, 1e-5, name + " forward");

        var dxRef = new float[x.Length];
        var dxFast = Enumerable.Repeat(float.NaN, x.Length).ToArray(); // overwrite semantics
        ConvReference.Conv2dBackwardData(g, dy, w, dxRef);
        ConvFast.Conv2dBackwardData(g, dy, w, dxFast);
        AssertClose(dxRef, dxFast, 1e-5, name + " backward data");

        var dwRef = new float[w.Length];
        var dwFast = Enumerable.Repeat(float.NaN, w.Length).ToArray();
        ConvReference.Conv2dBackwardWeight(g, x, dy, dwRef);
        ConvFast.Conv2dBackwardWeight(g, x, dy, dwFast);
        AssertClose(dwRef, dwFast, 1e-5, name + " backward weight");

        // accumulate = true adds to what is there.
        var dwAcc = RandomFloats(5, w.Length);
        var expectedAcc = dwAcc.Zip(dwRef, (p, q) => p + q).ToArray();
        ConvFast.Conv2dBackwardWeight(g, x, dy, dwAcc, accumulate: true);
        AssertClose(expectedAcc, dwAcc, 1e-5, name + " backward weight accumulate");

        var dbRef = new float[bias.Length];
        var dbFast = new float[bias.Length];
        ConvReference.Conv2dBackwardBias(g, dy, dbRef);
        ConvFast.Conv2dBackwardBias(g, dy, dbFast);
        AssertClose(dbRef, dbFast, 1e-5, name + " backward bias");
    }

    public static TheoryData<string, Conv2dGeometry> LargerGeometries() => new()
    {
        { "shifted GEMMs, rows split across threads", new Conv2dGeometry(1, 64, 16, 16, 64, 3, 3, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1) },
        { "shifted GEMMs, odd sizes", new Conv2dGeometry(1, 13, 33, 31, 17, 3, 3, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1) },
        // Padded planes too large for the shifted GEMMs: im2col in column chunks, parallel im2col.
        { "im2col, stride 1", new Conv2dGeometry(1, 80, 41, 39, 9, 3, 3, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1) },
    };

    [Theory]
    [MemberData(nameof(LargerGeometries))]
    public void Fast_matches_reference_single_threaded_and_at_larger_sizes(string name, Conv2dGeometry g)
    {
        var x = RandomFloats(1, (int)g.InputLength);
        var w = RandomFloats(2, (int)g.WeightLength);
        var dy = RandomFloats(3, (int)g.OutputLength);
        var yRef = new float[g.OutputLength];
        var dwRef = new float[w.Length];
        var dxRef = new float[x.Length];
        ConvReference.Conv2dForward(g, x, w, ReadOnlySpan<float>.Empty, yRef);
        ConvReference.Conv2dBackwardWeight(g, x, dy, dwRef);
        ConvReference.Conv2dBackwardData(g, dy, w, dxRef);
        int saved = CpuKernelOptions.MaxDegreeOfParallelism;
        foreach (int degree in new[] { 1, 3 })
        {
            try
            {
                CpuKernelOptions.MaxDegreeOfParallelism = degree;
                var y = new float[g.OutputLength];
                var dw = new float[w.Length];
                var dx = new float[x.Length];
                ConvFast.Conv2dForward(g, x, w, ReadOnlySpan<float>.Empty, y);
                ConvFast.Conv2dBackwardWeight(g, x, dy, dw);
                ConvFast.Conv2dBackwardData(g, dy, w, dx);
                AssertClose(yRef, y, 1e-5, $"{name} forward, {degree} threads");
                AssertClose(dwRef, dw, 1e-5, $"{name} backward weight, {degree} threads");
                AssertClose(dxRef, dx, 1e-5, $"{name} backward data, {degree} threads");
            }
            finally
            {
                CpuKernelOptions.MaxDegreeOfParallelism = saved;
            }
        }
    }

    [Fact]
    public void Rejects_inconsistent_geometry()
    {
        Assert.Throws<ArgumentException>(() => new Conv2dGeometry(1, 5, 4, 4, 6, 3, 3, Groups: 2).Validate());
        Assert.Throws<ArgumentException>(() => new Conv2dGeometry(1, 1, 2, 2, 1, 3, 3).Validate());
        var g = new Conv2dGeometry(1, 1, 4, 4, 1, 3, 3);
        Assert.Throws<ArgumentException>(() => ConvFast.Conv2dForward(g, new float[15], new float[9], ReadOnlySpan<float>.Empty, new float[4]));
    }

    [Fact]
    [Trait("Category", "Slow")]
    public void Benchmark_fast_conv_at_SD_sizes()
    {
        // SD 1.5's first down block at 512×512 (320 channels, 64×64 latent, 3×3 pad 1) and its stride-2 downsampler.
        foreach (var (name, g) in new[]
        {
            ("3x3 320→320 64×64", new Conv2dGeometry(1, 320, 64, 64, 320, 3, 3, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1)),
            ("3x3 s2 320→320 64×64", new Conv2dGeometry(1, 320, 64, 64, 320, 3, 3, 2, 2, 1, 1, 1, 1)),
            ("1x1 320→320 64×64", new Conv2dGeometry(1, 320, 64, 64, 320, 1, 1)),
        })
        {
            var x = RandomFloats(1, (int)g.InputLength);
            var w = RandomFloats(2, (int)g.WeightLength);
            var dy = RandomFloats(3, (int)g.OutputLength);
            var y = new float[g.OutputLength];
            var dx = new float[x.Length];
            var dw = new float[w.Length];
            double flops = 2.0 * g.OutputLength * g.InChannelsPerGroup * g.KernelH * g.KernelW;
            double Best(Action run)
            {
                run();
                double best = double.MaxValue;
                for (int i = 0; i < 3; i++)
                {
                    var sw = Stopwatch.StartNew();
                    run();
                    best = Math.Min(best, sw.Elapsed.TotalSeconds);
                }
                return flops / best / 1e9;
            }
            double fwd = Best(() => ConvFast.Conv2dForward(g, x, w, ReadOnlySpan<float>.Empty, y));
            double bwdData = Best(() => ConvFast.Conv2dBackwardData(g, dy, w, dx));
            double bwdWeight = Best(() => ConvFast.Conv2dBackwardWeight(g, x, dy, dw));
            output.WriteLine($"fast conv {name}: forward {fwd:F1}, backward data {bwdData:F1}, backward weight {bwdWeight:F1} GFLOP/s " +
                             $"({CpuKernelOptions.MaxDegreeOfParallelism} threads)");
        }
    }
}
