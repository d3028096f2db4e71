using System.Runtime.InteropServices;
using CudaDream.Engine.Backends;
using CudaDream.Engine.Ops;
using CudaDream.Engine.Training.Optimizers;
using CudaDream.TestSupport;
using Xunit;

namespace CudaDream.Engine.Tests.Emu;

/// <summary>Multi-tensor AdamW with global-norm clipping on emu against CudaDream.Engine.Training's reference.</summary>
public class EmuOptimizerTests
{
    [Theory, MemberData(nameof(EmuTiers.All), MemberType = typeof(EmuTiers))]
    public void Clipped_adamw_step_matches_training_reference(int tier)
    {
        using var s = new EmuSession(tier);
        int[] sizes = [37, 300];
        var p = sizes.Select((n, i) => EmuSession.Random(n, 50 + i)).ToArray();
        var g = sizes.Select((n, i) => EmuSession.Random(n, 60 + i, 3f)).ToArray();
        var slots = sizes.Select((n, i) => new ParamSlot { Param = s.Upload(p[i]), Grad = s.Upload(g[i]), M = s.Upload(new float[n]), V = s.Upload(new float[n]), Count = n }).ToArray();
        var table = s.Upload(slots);
        int chunks = OptimizerKernels.OptimizerChunks(sizes.Select(n => (long)n));
        var partials = s.Output(sizes.Length * chunks); var clip = s.Output(2); var flag = s.Upload(new int[1]);
        OptimizerKernels.GradNorm(s.Device, table, sizes.Length, chunks, partials, clip, flag, maxNorm: 1f);
        var cfg = AdamWConfig.ForStep(1, lr: 1e-2f, weightDecay: 1e-2f);
        OptimizerKernels.AdamWUpdate(s.Device, table, sizes.Length, chunks, cfg, clip, flag);

        var clipRef = GradientClipping.ClipByGlobalNorm(g.Select(a => new Memory<float>(a)), 1.0); // scales g in place
        var st = AdamWScalars.For(new AdamWOptions(), 1e-2, 1e-2, 1);
        TensorAssert.Close(new[] { (float)clipRef.TotalNorm }, s.Download(clip, 1), 1e-5, "global norm");
        for (int i = 0; i < sizes.Length; i++)
        {
            var pr = (float[])p[i].Clone();
            AdamW.UpdateElements(pr, g[i], new float[sizes[i]], new float[sizes[i]], st);
            TensorAssert.Close(pr, s.Download(slots[i].Param, sizes[i]), 1e-5, $"param {i}");
        }
    }

    [Fact]
    public void Nonfinite_gradient_sets_the_flag_and_skips_the_update()
    {
        using var s = new EmuSession(800);
        var p = EmuSession.Random(10, 70); var g = EmuSession.Random(10, 71); g[3] = float.NaN;
        var slot = new ParamSlot { Param = s.Upload(p), Grad = s.Upload(g), M = s.Upload(new float[10]), V = s.Upload(new float[10]), Count = 10 };
        var table = s.Upload(new[] { slot }); var flag = s.Upload(new int[1]);
        OptimizerKernels.GradNorm(s.Device, table, 1, 1, s.Output(1), s.Output(2), flag, 1f);
        OptimizerKernels.AdamWUpdate(s.Device, table, 1, 1, AdamWConfig.ForStep(1, 1e-2f), DevicePtr.Null, flag);
        var f = new int[1];
        s.Device.CopyToHost(MemoryMarshal.AsBytes(f.AsSpan()), flag);
        Assert.Equal(1, f[0]);
        Assert.Equal(p, s.Download(slot.Param, 10));
    }
}
