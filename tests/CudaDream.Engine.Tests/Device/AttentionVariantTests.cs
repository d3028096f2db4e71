using CudaDream.Engine.Backends;
using CudaDream.Engine.Backends.Cpu.Kernels;
using CudaDream.Engine.Ops;
using CudaDream.Engine.Tests.Emu;
using CudaDream.TestSupport;
using Xunit;

namespace CudaDream.Engine.Tests.Device;

/// <summary>
/// Narrow heads run the row-per-thread attention kernels by default; the warp-per-row kernels must stay
/// correct at those widths too (they take over above 32). Both against the CPU reference, every tier.
/// </summary>
public class AttentionVariantTests
{
    public static IEnumerable<object[]> Cases() =>
        from tier in Backends.Emu.EmuLibrary.Tiers from warp in new[] { false, true } from d in new[] { 4, 16, 32 } select new object[] { tier, warp, d };

    [Theory, MemberData(nameof(Cases))]
    public void Kernel_variant_matches_reference(int tier, bool warpPerRow, int headDim)
    {
        var a = AttentionShape.Create(2, 37, 29, 3, headDim, causal: false);
        var causal = AttentionShape.Create(1, 33, 33, 2, headDim, causal: true);
        using var s = new EmuSession(tier);
        foreach (var shape in new[] { a, causal })
        {
            float[] q = EmuSession.Random((int)shape.QueryLengthTotal, 31, 2f), k = EmuSession.Random((int)shape.KeyLengthTotal, 32, 2f);
            float[] v = EmuSession.Random((int)shape.ValueLengthTotal, 33), dout = EmuSession.Random((int)shape.OutputLengthTotal, 34);
            float[] oRef = new float[shape.OutputLengthTotal], lseRef = new float[shape.LseLength];
            float[] dqRef = new float[q.Length], dkRef = new float[k.Length], dvRef = new float[v.Length];
            AttentionReference.Forward<float>(shape, q, k, v, oRef, lseRef);
            AttentionReference.Backward<float>(shape, q, k, v, oRef, lseRef, dout, dqRef, dkRef, dvRef);

            var args = AttentionKernels.Bnhd(shape);
            DevicePtr pq = s.Upload(q), pk = s.Upload(k), pv = s.Upload(v);
            DevicePtr o = s.Output(oRef.Length), lse = s.Output(lseRef.Length), dq = s.Output(q.Length), dk = s.Output(k.Length), dv = s.Output(v.Length);
            AttentionKernels.Forward(s.Device, args, pq, pk, pv, o, lse, warpPerRow: warpPerRow);
            AttentionKernels.Backward(s.Device, args, pq, pk, pv, s.Upload(oRef), s.Upload(dout), s.Upload(lseRef), s.Output(lseRef.Length), dq, dk, dv, warpPerRow: warpPerRow);
            string what = $"{(warpPerRow ? "warp" : "rows")} d={headDim} causal={shape.Causal}";
            TensorAssert.Close(oRef, s.Download(o, oRef.Length), 1e-5, what + " o");
            TensorAssert.Close(lseRef, s.Download(lse, lseRef.Length), 1e-5, what + " lse");
            TensorAssert.Close(dqRef, s.Download(dq, q.Length), 1e-4, what + " dq");
            TensorAssert.Close(dkRef, s.Download(dk, k.Length), 1e-4, what + " dk");
            TensorAssert.Close(dvRef, s.Download(dv, v.Length), 1e-4, what + " dv");
        }
    }
}
