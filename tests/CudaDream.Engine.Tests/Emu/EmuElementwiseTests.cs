using CudaDream.Engine.Backends;
using CudaDream.Engine.Ops;
using CudaDream.TestSupport;
using Xunit;

namespace CudaDream.Engine.Tests.Emu;

/// <summary>Elementwise, broadcast, reduction, gather and optimizer kernels; references are one-line .NET math.</summary>
public class EmuElementwiseTests
{
    [Theory, MemberData(nameof(EmuTiers.All), MemberType = typeof(EmuTiers))]
    public void Unary_ops_and_their_derivatives_match_dotnet_math(int tier)
    {
        using var s = new EmuSession(tier);
        int n = 300;
        var x = EmuSession.Random(n, 40, 2f).Select(v => v + 2.5f).ToArray(); // positive: log, sqrt, rsqrt
        var dy = EmuSession.Random(n, 41);
        var cases = new (UnaryOp Op, Func<float, float> F, Func<float, float> D)[]
        {
            (UnaryOp.Exp, MathF.Exp, MathF.Exp), (UnaryOp.Log, MathF.Log, v => 1 / v), (UnaryOp.Sqrt, MathF.Sqrt, v => 0.5f / MathF.Sqrt(v)),
            (UnaryOp.Rsqrt, v => 1 / MathF.Sqrt(v), v => -0.5f / (v * MathF.Sqrt(v))), (UnaryOp.Neg, v => -v, _ => -1),
            (UnaryOp.Sin, MathF.Sin, MathF.Cos), (UnaryOp.Cos, MathF.Cos, v => -MathF.Sin(v)), (UnaryOp.Scale, v => 3 * v, _ => 3),
            (UnaryOp.Square, v => v * v, v => 2 * v), (UnaryOp.Reciprocal, v => 1 / v, v => -1 / (v * v)),
        };
        var px = s.Upload(x); var pdy = s.Upload(dy);
        foreach (var c in cases)
        {
            var y = s.Output(n); var dx = s.Output(n);
            ElementwiseKernels.Unary(s.Device, c.Op, px, y, n, 3f);
            ElementwiseKernels.UnaryBackward(s.Device, c.Op, px, pdy, dx, n, 3f);
            TensorAssert.Close(x.Select(c.F).ToArray(), s.Download(y, n), 1e-6, c.Op.ToString());
            TensorAssert.Close(x.Select((v, i) => dy[i] * c.D(v)).ToArray(), s.Download(dx, n), 1e-6, c.Op + " backward");
        }
    }

    [Theory, MemberData(nameof(EmuTiers.All), MemberType = typeof(EmuTiers))]
    public void Binary_ops_broadcast_like_numpy(int tier)
    {
        using var s = new EmuSession(tier);
        int[] aShape = [2, 3, 4], bShape = [3, 1];
        var a = EmuSession.Random(24, 42); var b = EmuSession.Random(3, 43).Select(v => v + 2f).ToArray();
        var pa = s.Upload(a); var pb = s.Upload(b);
        foreach (var (op, f) in new (BinaryOp, Func<float, float, float>)[] { (BinaryOp.Add, (p, q) => p + q), (BinaryOp.Sub, (p, q) => p - q),
                     (BinaryOp.Mul, (p, q) => p * q), (BinaryOp.Div, (p, q) => p / q), (BinaryOp.Max, MathF.Max), (BinaryOp.Min, MathF.Min) })
        {
            var y = s.Output(24);
            ElementwiseKernels.Binary(s.Device, op, pa, aShape, pb, bShape, y);
            var expected = Enumerable.Range(0, 24).Select(i => f(a[i], b[(i / 4) % 3])).ToArray();
            TensorAssert.Close(expected, s.Download(y, 24), 0, op.ToString());
        }
    }

    [Theory, MemberData(nameof(EmuTiers.All), MemberType = typeof(EmuTiers))]
    public void Reductions_over_rows_and_strided_axes(int tier)
    {
        using var s = new EmuSession(tier);
        int outer = 3, len = 50, inner = 4;
        var x = EmuSession.Random(outer * len * inner, 44);
        var px = s.Upload(x);
        foreach (var op in new[] { ReduceOp.Sum, ReduceOp.Mean, ReduceOp.Max, ReduceOp.SumOfSquares })
        {
            Func<IEnumerable<float>, float> r = op switch
            {
                ReduceOp.Sum => v => v.Sum(), ReduceOp.Mean => v => v.Average(), ReduceOp.Max => v => v.Max(), _ => v => v.Sum(t => t * t),
            };
            var y = s.Output(outer * inner);
            ReduceKernels.Reduce(s.Device, op, px, y, outer, len, inner);
            var expected = Enumerable.Range(0, outer * inner).Select(o => r(Enumerable.Range(0, len).Select(i => x[(o / inner * len + i) * inner + o % inner]))).ToArray();
            TensorAssert.Close(expected, s.Download(y, outer * inner), 1e-5, op + " strided");
            var rows = s.Output(outer * inner);
            ReduceKernels.Reduce(s.Device, op, px, rows, outer * inner, len, 1);
            var expectedRows = Enumerable.Range(0, outer * inner).Select(o => r(x.Skip(o * len).Take(len))).ToArray();
            TensorAssert.Close(expectedRows, s.Download(rows, outer * inner), 1e-5, op + " rows");
        }
    }

    [Theory, MemberData(nameof(EmuTiers.All), MemberType = typeof(EmuTiers))]
    public void Gather_forward_backward_and_bad_index_flag(int tier)
    {
        using var s = new EmuSession(tier);
        int vocab = 10, dim = 6;
        var table = EmuSession.Random(vocab * dim, 45);
        long[] idx = [3, 0, 9, -1, 3];
        var pt = s.Upload(table); var pi = s.Upload(idx); var bad = s.Upload(new int[1]);
        var y = s.Output(idx.Length * dim);
        LayoutKernels.Gather(s.Device, pt, pi, Tensors.DType.I64, y, 1, vocab, dim, idx.Length, bad);
        var expected = idx.SelectMany(i => table.Skip((int)((i + vocab) % vocab) * dim).Take(dim)).ToArray();
        TensorAssert.Close(expected, s.Download(y, expected.Length), 0, "gather");
        var dy = EmuSession.Random(expected.Length, 46);
        var dx = s.Upload(new float[vocab * dim]);
        LayoutKernels.GatherBackward(s.Device, s.Upload(dy), pi, Tensors.DType.I64, dx, 1, vocab, dim, idx.Length);
        var dxExpected = new float[vocab * dim];
        for (int k = 0; k < idx.Length; k++) for (int j = 0; j < dim; j++) dxExpected[(int)((idx[k] + vocab) % vocab) * dim + j] += dy[k * dim + j];
        TensorAssert.Close(dxExpected, s.Download(dx, dxExpected.Length), 1e-6, "gather backward");
        var flag = new int[1];
        s.Device.CopyToHost(System.Runtime.InteropServices.MemoryMarshal.AsBytes(flag.AsSpan()), bad);
        Assert.Equal(0, flag[0]);
        LayoutKernels.Gather(s.Device, pt, s.Upload(new long[] { 10 }), Tensors.DType.I64, s.Output(dim), 1, vocab, dim, 1, bad);
        s.Device.CopyToHost(System.Runtime.InteropServices.MemoryMarshal.AsBytes(flag.AsSpan()), bad);
        Assert.Equal(1, flag[0]);
    }
}
