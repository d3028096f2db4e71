using System.Diagnostics;
using CudaDream.Engine.Backends;
using CudaDream.Engine.Backends.Cpu.Kernels;
using CudaDream.Engine.Tests.Emu;
using Xunit;
using Xunit.Abstractions;
namespace CudaDream.Engine.Tests.Device;
public class TmpEmuBench(ITestOutputHelper log)
{
    [Fact]
    public void Bench()
    {
        using var s = new EmuSession(800, CudaDream.Engine.Backends.Emu.EmuGuard.None);
        var sw = Stopwatch.StartNew();
        var a = AttentionShape.Create(2, 256, 256, 8, 4);
        var q = EmuSession.Random(2 * 256 * 32, 1); var k = EmuSession.Random(2 * 256 * 32, 2); var v = EmuSession.Random(2 * 256 * 32, 3);
        var o = s.Output(q.Length); var lse = s.Output(2 * 8 * 256);
        var args = KernelLaunchers.AttentionBnhd(a);
        var pq = s.Upload(q); var pk = s.Upload(k); var pv = s.Upload(v);
        log.WriteLine($"setup {sw.Elapsed.TotalSeconds:F2}"); sw.Restart();
        KernelLaunchers.AttentionForward(s.Device, args, pq, pk, pv, o, lse);
        log.WriteLine($"attention fwd {sw.Elapsed.TotalSeconds:F2}"); sw.Restart();
        var x = s.Upload(EmuSession.Random(1 << 20, 4)); var y = s.Output(1 << 20);
        KernelLaunchers.Activation(s.Device, UnaryOp.Silu, x, y, 1 << 20);
        log.WriteLine($"silu 1M {sw.Elapsed.TotalSeconds:F2}"); sw.Restart();
        KernelLaunchers.Activation(s.Device, UnaryOp.Silu, x, y, 16384);
        log.WriteLine($"silu 16K {sw.Elapsed.TotalSeconds:F3}"); sw.Restart();
        var g = new Conv2dGeometry(1, 32, 128, 128, 32, 3, 3, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1);
        var xc = s.Upload(EmuSession.Random(32 * 128 * 128, 5)); var wc = s.Upload(EmuSession.Random(32 * 32 * 9, 6));
        var col = s.Output(KernelLaunchers.Conv2dWorkspaceElements(g)); var yc = s.Output(32 * 128 * 128);
        KernelLaunchers.Conv2dForward(s.Device, g, xc, wc, DevicePtr.Null, yc, col);
        log.WriteLine($"conv 32x128x128 3x3 {sw.Elapsed.TotalSeconds:F2}"); sw.Restart();
        var gx = s.Upload(EmuSession.Random(8 * 32 * 16384, 7)); var gy = s.Output(8*32*16384); var mean = s.Output(8); var rstd = s.Output(8);
        KernelLaunchers.GroupNormForward(s.Device, gx, s.Upload(EmuSession.Random(32, 1)), s.Upload(EmuSession.Random(32, 2)), gy, mean, rstd, 1, 32, 16384, 8, 1e-5f, true);
        log.WriteLine($"groupnorm 32x128x128 {sw.Elapsed.TotalSeconds:F2}"); sw.Restart();
    }
}
