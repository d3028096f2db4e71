using CudaDream.Engine.Backends;
using CudaDream.Engine.Backends.Emu;
using CudaDream.Engine.Ops;
using Xunit;

namespace CudaDream.Engine.Tests.Emu;

/// <summary>Planted bugs (kernels/emu/selftest.cu) that a GPU may hide and the emulator must catch.</summary>
public class EmuAdversarialTests
{
    private const int N = 256;

    private static float[] Iota() => Enumerable.Range(0, N).Select(i => (float)i).ToArray();

    [Theory, MemberData(nameof(EmuTiers.All), MemberType = typeof(EmuTiers))]
    public void Planted_shared_memory_race_gives_wrong_results_and_the_synchronized_kernel_does_not(int tier)
    {
        using var s = new EmuSession(tier);
        var x = Iota();
        var px = s.Upload(x);
        var expected = Enumerable.Range(0, N).Select(i => x[(i + 1) % N]).ToArray();
        foreach (int sync in new[] { 1, 0 })
        {
            var y = s.Output(N);
            s.Device.Launch("selftest_neighbour", new Dim3(1), new Dim3(N), 0, new KernelArgs().Ptr(px).Ptr(y).I32(N).I32(sync));
            var got = s.Download(y, N);
            int wrong = got.Zip(expected).Count(p => p.First != p.Second);
            if (sync == 1) Assert.Equal(0, wrong);
            else Assert.True(wrong > N / 4, $"the race went unnoticed: only {wrong} of {N} values wrong");
        }
    }

    [Theory, MemberData(nameof(EmuTiers.All), MemberType = typeof(EmuTiers))]
    public void Planted_out_of_bounds_write_is_reported_with_the_allocation(int tier)
    {
        using var s = new EmuSession(tier, EmuGuard.After);
        var y = s.Output(N);
        s.Device.Launch("selftest_write", new Dim3(2), new Dim3(256), 0, new KernelArgs().Ptr(y).I32(N).I32(0));
        var e = Assert.Throws<EmuKernelException>(() =>
            s.Device.Launch("selftest_write", new Dim3(2), new Dim3(256), 0, new KernelArgs().Ptr(y).I32(N).I32(1)));
        Assert.Contains("out-of-bounds", e.Message);
        Assert.Contains("0 bytes past the end of a 1024-byte allocation", e.Message);
        Assert.Contains("selftest_write", e.Message);
    }

    [Theory, MemberData(nameof(EmuTiers.All), MemberType = typeof(EmuTiers))]
    public void Planted_underrun_is_caught_by_the_guard_before_mode(int tier)
    {
        using var s = new EmuSession(tier, EmuGuard.Before);
        var y = s.Output(N);
        var e = Assert.Throws<EmuKernelException>(() =>
            s.Device.Launch("selftest_write_before", new Dim3(1), new Dim3(256), 0, new KernelArgs().Ptr(y).I32(N).I32(1)));
        Assert.Contains("before the start", e.Message);
    }

    [Theory, MemberData(nameof(EmuTiers.All), MemberType = typeof(EmuTiers))]
    public void Barrier_divergence_is_an_error(int tier)
    {
        using var s = new EmuSession(tier);
        var e = Assert.Throws<EmuKernelException>(() =>
            s.Device.Launch("selftest_barrier_divergence", new Dim3(1), new Dim3(64), 0, new KernelArgs().Ptr(s.Output(64))));
        Assert.Contains("__syncthreads", e.Message);
    }

    /// <summary>cp.async lands only at its wait on sm_80+, so reading early sees garbage; below sm_80 it is a plain copy.</summary>
    [Theory, MemberData(nameof(EmuTiers.All), MemberType = typeof(EmuTiers))]
    public void Async_copy_is_visible_only_after_its_wait(int tier)
    {
        using var s = new EmuSession(tier);
        var x = Iota();
        var px = s.Upload(x);
        foreach (int waited in new[] { 1, 0 })
        {
            var y = s.Output(N);
            s.Device.Launch("selftest_async_copy", new Dim3(1), new Dim3(N), 0, new KernelArgs().Ptr(px).Ptr(y).I32(waited));
            var got = s.Download(y, N);
            bool equal = got.SequenceEqual(x);
            if (waited == 1 || tier < 800) Assert.True(equal, $"waited={waited}: copy result wrong");
            else Assert.False(equal, "a read before cp.async.wait_group saw the copied data");
        }
    }

    [Fact]
    public void Launch_geometry_beyond_cuda_limits_is_rejected()
    {
        using var s = new EmuSession(800);
        var e = Assert.Throws<EmuKernelException>(() =>
            s.Device.Launch("selftest_write", new Dim3(1), new Dim3(2048), 0, new KernelArgs().Ptr(s.Output(1)).I32(1).I32(0)));
        Assert.Contains("invalid block", e.Message);
        var e2 = Assert.Throws<EmuKernelException>(() =>
            s.Device.Launch("selftest_write", new Dim3(1), new Dim3(32), 64 * 1024, new KernelArgs().Ptr(s.Output(1)).I32(1).I32(0)));
        Assert.Contains("dynamic shared memory", e2.Message);
    }
}
