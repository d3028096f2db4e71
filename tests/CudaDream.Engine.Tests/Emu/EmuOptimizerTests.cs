using CudaDream.Engine.Backends;
using CudaDream.Engine.Backends.Device;
using CudaDream.Engine.Backends.Emu;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Ops;
using CudaDream.Engine.Tensors;
using CudaDream.Engine.Training;
using CudaDream.Engine.Training.Optimizers;
using CudaDream.TestSupport;
using Xunit;

namespace CudaDream.Engine.Tests.Emu;

/// <summary>
/// The device-resident update (kernels/optimizer.cu through <see cref="DeviceOptimizer"/>) on emu against the CPU's
/// optimizers, clipping, accumulation and loss scaler: same parameters, moments, step counts and report.
/// </summary>
public class EmuOptimizerTests
{
    /// <summary>A run's trained tensors and the host optimizer over them (two groups: "unet" and "text").</summary>
    private sealed class Problem
    {
        public readonly int[][] Sizes = [[37, 300], [70000]]; // the last spans two optimizer chunks
        public readonly Tensor[][] Tensors;
        public readonly float[][][] Grads;
        public readonly Optimizer Optimizer;

        public Problem(Func<IReadOnlyList<ParameterGroup>, Optimizer> make, int seed)
        {
            Tensors = Sizes.Select((g, gi) => g.Select((n, i) => Tensor.FromArray(EmuSession.Random(n, seed + 10 * gi + i), n)).ToArray()).ToArray();
            Grads = Sizes.Select(g => g.Select(n => new float[n]).ToArray()).ToArray();
            var groups = Sizes.Select((g, gi) => new ParameterGroup(gi == 0 ? "unet" : "text",
                g.Select((n, i) => new OptimizerParameter($"p{i}", Tensors[gi][i].Memory<float>(), Grads[gi][i])).ToList(),
                learningRate: gi == 0 ? 1e-2 : 3e-3, weightDecay: gi == 0 ? 1e-2 : 0)).ToList();
            Optimizer = make(groups);
        }

        public Tensor[][] Clone() => Tensors.Select(g => g.Select(t => t.Clone()).ToArray()).ToArray();
    }

    /// <summary>Micro-step gradients of update u, micro-step m, tensor (g, i): keyed, so host and device see the same.</summary>
    private static float[] MicroGradient(int n, int u, int m, int g, int i, float scale = 2f) => EmuSession.Random(n, 1000 + 97 * u + 31 * m + 7 * g + i, scale);

    private static void HostUpdates(Problem host, int updates, int micros, double maxNorm, List<double> norms)
    {
        for (int u = 0; u < updates; u++)
        {
            for (int g = 0; g < host.Sizes.Length; g++)
                for (int i = 0; i < host.Sizes[g].Length; i++)
                {
                    var acc = host.Grads[g][i];
                    Array.Clear(acc);
                    for (int m = 0; m < micros; m++)
                    {
                        var micro = MicroGradient(acc.Length, u, m, g, i);
                        for (int k = 0; k < acc.Length; k++) acc[k] += (1f / micros) * micro[k];
                    }
                }
            var clip = maxNorm > 0 ? GradientClipping.ClipByGlobalNorm(host.Optimizer, maxNorm) : GradientClipping.ClipByGlobalNorm(host.Optimizer, double.MaxValue);
            norms.Add(clip.TotalNorm);
            host.Optimizer.SetLearningRateMultiplier(1.0 - 0.2 * u);
            host.Optimizer.Step();
        }
    }

    /// <summary>The same updates on the device; micro-step gradients are written into a "gradient" buffer each executor would own.</summary>
    private static List<UpdateReport> DeviceUpdates(Problem dev, int updates, int micros, double maxNorm, bool capture, int tier = 800)
    {
        using var context = new DeviceContext(new EmuDevice(new EmuOptions { Tier = tier }), ownsDevice: true);
        foreach (var t in dev.Tensors.SelectMany(g => g)) { context.MarkMutable(t); context.MakeResident(t); }
        using var optimizer = new DeviceOptimizer(context, dev.Optimizer, dev.Tensors, new DeviceUpdateOptions(micros, maxNorm));
        var d = context.Device;
        var grads = dev.Sizes.Select(g => g.Select(n => d.Allocate(n * 4L)).ToArray()).ToArray();
        var source = optimizer.AddGradientSource(dev.Sizes.SelectMany((g, gi) => g.Select((_, i) => (gi, i, grads[gi][i].Ptr))).ToList());
        long perMicro = dev.Sizes.Sum(g => g.Sum(n => n * 4L));
        using var staging = d.AllocateHost(perMicro * micros + 4L * micros);
        var reports = new List<UpdateReport>();
        IDeviceGraph? graph = null;

        void Enqueue()
        {
            optimizer.BeginUpdate();
            for (int m = 0; m < micros; m++)
            {
                long at = perMicro * m;
                for (int g = 0; g < dev.Sizes.Length; g++)
                    for (int i = 0; i < dev.Sizes[g].Length; i++)
                    {
                        d.CopyToDeviceAsync(grads[g][i].Ptr, staging, at, dev.Sizes[g][i] * 4L);
                        at += dev.Sizes[g][i] * 4L;
                    }
                optimizer.Accumulate(source, m == 0);
            }
            optimizer.EndUpdate();
        }

        for (int u = 0; u < updates; u++)
        {
            for (int m = 0; m < micros; m++)
            {
                long at = perMicro * m;
                for (int g = 0; g < dev.Sizes.Length; g++)
                    for (int i = 0; i < dev.Sizes[g].Length; i++)
                    {
                        MicroGradient(dev.Sizes[g][i], u, m, g, i).AsSpan().CopyTo(staging.Span<float>(at, dev.Sizes[g][i]));
                        at += dev.Sizes[g][i] * 4L;
                    }
            }
            dev.Optimizer.SetLearningRateMultiplier(1.0 - 0.2 * u);
            optimizer.Stage();
            if (!capture) Enqueue();
            else
            {
                if (graph == null)
                {
                    d.BeginCapture();
                    Enqueue();
                    graph = d.EndCapture();
                }
                graph.Replay();
            }
            reports.Add(optimizer.Complete());
        }
        graph?.Dispose();
        optimizer.Download();
        foreach (var g in grads.SelectMany(x => x)) g.Dispose();
        return reports;
    }

    private static void AssertSameRun(Problem host, Problem dev, List<double> norms, List<UpdateReport> reports, double tolerance)
    {
        for (int u = 0; u < norms.Count; u++)
        {
            Assert.True(reports[u].Applied);
            Assert.Equal(norms[u], reports[u].GradNorm, norms[u] * 1e-5);
        }
        for (int g = 0; g < host.Sizes.Length; g++)
        {
            Assert.Equal(host.Optimizer.Groups[g].StepCount, dev.Optimizer.Groups[g].StepCount);
            for (int i = 0; i < host.Sizes[g].Length; i++)
                TensorAssert.Close(host.Tensors[g][i], dev.Tensors[g][i], tolerance, $"group {g} parameter {i}");
        }
        var hs = host.Optimizer.State();
        var ds = dev.Optimizer.State();
        Assert.Equal(hs.Keys.Order(), ds.Keys.Order());
        foreach (var k in hs.Keys) TensorAssert.Close(hs[k], ds[k], tolerance, k);
    }

    [Theory, MemberData(nameof(EmuTiers.All), MemberType = typeof(EmuTiers))]
    public void Accumulated_clipped_adamw_updates_match_the_cpu(int tier)
    {
        var host = new Problem(g => new AdamW(g), 50);
        var dev = new Problem(g => new AdamW(g), 50);
        var norms = new List<double>();
        HostUpdates(host, 3, 2, 1.0, norms);
        var reports = DeviceUpdates(dev, 3, 2, 1.0, capture: false, tier);
        AssertSameRun(host, dev, norms, reports, 2e-6);
    }

    [Fact]
    public void Sgd_with_nesterov_momentum_matches_the_cpu()
    {
        Optimizer Make(IReadOnlyList<ParameterGroup> g) => new Sgd(g, new SgdOptions(Momentum: 0.9, Nesterov: true));
        var host = new Problem(Make, 60);
        var dev = new Problem(Make, 60);
        var norms = new List<double>();
        HostUpdates(host, 3, 1, 0, norms);
        var reports = DeviceUpdates(dev, 3, 1, 0, capture: false);
        AssertSameRun(host, dev, norms, reports, 2e-6);
    }

    [Fact]
    public void A_captured_update_replays_to_the_same_parameters()
    {
        var plain = new Problem(g => new AdamW(g), 70);
        var captured = new Problem(g => new AdamW(g), 70);
        var a = DeviceUpdates(plain, 3, 2, 0.5, capture: false);
        var b = DeviceUpdates(captured, 3, 2, 0.5, capture: true);
        for (int g = 0; g < plain.Sizes.Length; g++)
            for (int i = 0; i < plain.Sizes[g].Length; i++)
                TensorAssert.Close(plain.Tensors[g][i], captured.Tensors[g][i], 0, $"group {g} parameter {i}");
        Assert.Equal(a.Select(r => r.GradNorm), b.Select(r => r.GradNorm));
    }

    [Fact]
    public void A_nonfinite_gradient_skips_the_update_and_backs_off_the_loss_scale()
    {
        var t = Tensor.FromArray(EmuSession.Random(10, 80), 10);
        var before = t.Clone();
        var grad = new float[10];
        var group = new ParameterGroup("unet", [new OptimizerParameter("p", t.Memory<float>(), grad)], 1e-2);
        var adamw = new AdamW([group]);
        using var context = new DeviceContext(new EmuDevice(), ownsDevice: true);
        context.MarkMutable(t);
        context.MakeResident(t);
        using var optimizer = new DeviceOptimizer(context, adamw, [[t]], new DeviceUpdateOptions(LossScaling: true));
        var d = context.Device;
        using var g = d.Allocate(40);
        var source = optimizer.AddGradientSource([(0, 0, g.Ptr)]);
        var host = new LossScaler();
        optimizer.SetLossScale(host.Scale, host.GoodSteps, host.SkippedUpdates);

        UpdateReport Update(float[] gradient)
        {
            d.CopyToDevice(g.Ptr, System.Runtime.InteropServices.MemoryMarshal.AsBytes(gradient.AsSpan()));
            optimizer.Stage();
            optimizer.BeginUpdate();
            optimizer.Accumulate(source, true);
            optimizer.EndUpdate();
            return optimizer.Complete();
        }

        var bad = EmuSession.Random(10, 81);
        bad[3] = float.PositiveInfinity;
        var r = Update(bad);
        host.Update(false);
        Assert.False(r.Applied);
        Assert.Equal(host.Scale, r.LossScale);
        Assert.Equal(1, r.Skipped);
        Assert.Equal(0, group.StepCount);
        optimizer.Download();
        TensorAssert.Close(before, t, 0, "parameters after a skipped update");

        var good = Update(EmuSession.Random(10, 82));
        host.Update(true);
        Assert.True(good.Applied);
        Assert.Equal(host.Scale, good.LossScale);
        Assert.Equal(host.GoodSteps, good.GoodSteps);
        Assert.Equal(1, group.StepCount);
    }

    [Fact]
    public void A_failed_index_check_in_an_enqueued_run_is_reported_by_the_update()
    {
        var b = new ConformanceGraphBuilder(7);
        var table = b.Const(b.Floats([10, 4]));
        var g = b.Build(b.Node1("Gather", [table, b.Input(Tensor.FromArray([3L, 10], 2), "ids")]));
        var t = Tensor.FromArray(new float[4], 4);
        using var context = new DeviceContext(new EmuDevice(), ownsDevice: true);
        context.MarkMutable(t);
        context.MakeResident(t);
        using var executor = new DeviceExecutor(ExecutionPlan.Create(g.Graph), context);
        var adamw = new AdamW([new ParameterGroup("unet", [new OptimizerParameter("p", t.Memory<float>(), new float[4])], 1e-2)]);
        using var optimizer = new DeviceOptimizer(context, adamw, [[t]], new DeviceUpdateOptions());
        int flags = optimizer.AddFlagSource(executor);
        using var staging = context.Device.AllocateHost(32);
        g.Inputs["ids"].Data.Span.CopyTo(staging.Span(0, 16));
        staging.Span(16, 16).Clear();
        optimizer.Stage();
        optimizer.BeginUpdate();
        executor.Enqueue(new Dictionary<string, DeviceInput> { ["ids"] = new DeviceInput.Staged(staging, 0) }, new DeviceInput.Staged(staging, 16));
        optimizer.CheckFlags(flags);
        optimizer.EndUpdate();
        var e = Assert.Throws<GraphException>(() => optimizer.Complete());
        Assert.Contains("(Gather)", e.Message);
        Assert.Contains("out of range for dimension 10", e.Message);
    }
}
