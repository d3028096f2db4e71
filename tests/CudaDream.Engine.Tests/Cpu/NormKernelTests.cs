using CudaDream.Engine.Backends.Cpu.Kernels;
using CudaDream.Engine.Ops;
using Xunit;
using static CudaDream.Engine.Tests.Cpu.KernelTestSupport;

namespace CudaDream.Engine.Tests.Cpu;

public class NormKernelTests
{
    [Fact]
    public void GroupNorm_reference_matches_hand_computed_statistics()
    {
        // One sample, 2 channels × 2 pixels, one group: values 1,2,3,4 → mean 2.5, variance 1.25.
        double[] x = [1, 2, 3, 4];
        var y = new double[4];
        var mean = new double[1];
        var rstd = new double[1];
        GroupNormReference.Forward(1, 2, 2, 1, 0.0, x, new double[] { 2, 1 }, new double[] { 0, 10 }, y, mean, rstd);
        Assert.Equal(2.5, mean[0], 15);
        Assert.Equal(1 / Math.Sqrt(1.25), rstd[0], 15);
        double r = 1 / Math.Sqrt(1.25);
        Assert.Equal(new[] { -1.5 * r * 2, -0.5 * r * 2, 0.5 * r + 10, 1.5 * r + 10 }, y);
    }

    [Theory]
    [InlineData(false, true)]
    [InlineData(true, true)]
    [InlineData(true, false)]
    public void GroupNorm_reference_backward_matches_finite_differences(bool fuseSilu, bool affine)
    {
        int n = 2, c = 6, s = 5, groups = 3;
        var x = RandomDoubles(1, n * c * s, 2.0);
        var gamma = affine ? RandomDoubles(2, c) : [];
        var beta = affine ? RandomDoubles(3, c) : [];
        var r = RandomDoubles(4, n * c * s);
        var y = new double[x.Length];
        var mean = new double[n * groups];
        var rstd = new double[n * groups];
        double Loss()
        {
            GroupNormReference.Forward(n, c, s, groups, 1e-5, x, gamma, beta, y, mean, rstd, fuseSilu);
            return Dot(r, y);
        }
        Loss();
        var dx = new double[x.Length];
        var dgamma = new double[affine ? c : 0];
        var dbeta = new double[affine ? c : 0];
        GroupNormReference.Backward(n, c, s, groups, x, gamma, beta, mean, rstd, r, dx, dgamma, dbeta, fuseSilu);
        CheckGradient("dx", x, dx, Loss);
        if (affine)
        {
            CheckGradient("dgamma", gamma, dgamma, Loss);
            CheckGradient("dbeta", beta, dbeta, Loss);
        }
    }

    [Theory]
    [InlineData(3, 12, 37, 4, false)]
    [InlineData(2, 10, 129, 5, true)]
    [InlineData(1, 7, 300, 7, true)] // instance-norm shape (G = C)
    [InlineData(2, 64, 256, 8, true)] // large enough to run in parallel
    public void GroupNorm_fast_matches_reference(int n, int c, int s, int groups, bool fuseSilu)
    {
        var x = NormalFloats(1, n * c * s, 3.0, 1.5);
        var gamma = RandomFloats(2, c);
        var beta = RandomFloats(3, c);
        var dy = RandomFloats(4, n * c * s);
        var (yRef, meanRef, rstdRef) = (new float[x.Length], new float[n * groups], new float[n * groups]);
        var (yFast, meanFast, rstdFast) = (new float[x.Length], new float[n * groups], new float[n * groups]);
        GroupNormReference.Forward(n, c, s, groups, 1e-5f, x, gamma, beta, yRef, meanRef, rstdRef, fuseSilu);
        GroupNormFast.Forward(n, c, s, groups, 1e-5f, x, gamma, beta, yFast, meanFast, rstdFast, fuseSilu);
        AssertClose(yRef, yFast, 1e-5, "y");
        AssertClose(meanRef, meanFast, 1e-5, "mean");
        AssertClose(rstdRef, rstdFast, 1e-5, "rstd");

        var (dxRef, dgRef, dbRef) = (new float[x.Length], new float[c], new float[c]);
        var (dxFast, dgFast, dbFast) = (new float[x.Length], RandomFloats(5, c), RandomFloats(6, c));
        GroupNormReference.Backward(n, c, s, groups, x, gamma, beta, meanRef, rstdRef, dy, dxRef, dgRef, dbRef, fuseSilu);
        GroupNormFast.Backward(n, c, s, groups, x, gamma, beta, meanRef, rstdRef, dy, dxFast, dgFast, dbFast, fuseSilu);
        AssertClose(dxRef, dxFast, 1e-5, "dx");
        AssertClose(dgRef, dgFast, 1e-5, "dgamma");
        AssertClose(dbRef, dbFast, 1e-5, "dbeta");

        // accumulate adds, absent gamma/beta mean 1/0
        var dgAcc = (float[])dgRef.Clone();
        GroupNormFast.Backward(n, c, s, groups, x, gamma, beta, meanRef, rstdRef, dy, dxFast, dgAcc, [], fuseSilu, accumulate: true);
        AssertClose(dgRef.Select(v => 2 * v).ToArray(), dgAcc, 1e-5, "dgamma accumulate");
        var ones = Enumerable.Repeat(1f, c).ToArray();
        var zeros = new float[c];
        GroupNormFast.Forward(n, c, s, groups, 1e-5f, x, [], [], yFast, [], [], fuseSilu);
        GroupNormReference.Forward(n, c, s, groups, 1e-5f, x, ones, zeros, yRef, [], [], fuseSilu);
        AssertClose(yRef, yFast, 1e-5, "y without affine");
    }

    [Fact]
    public void InstanceNorm_is_group_norm_with_one_channel_per_group()
    {
        int n = 2, c = 5, s = 33;
        var x = NormalFloats(1, n * c * s);
        var scale = RandomFloats(2, c);
        var bias = RandomFloats(3, c);
        var expected = new float[x.Length];
        var actual = new float[x.Length];
        // Independent statement of InstanceNormalization: per (n, c) mean/variance over S.
        for (int p = 0; p < n * c; p++)
        {
            double mu = 0, variance = 0;
            for (int i = 0; i < s; i++) mu += x[p * s + i];
            mu /= s;
            for (int i = 0; i < s; i++) variance += (x[p * s + i] - mu) * (x[p * s + i] - mu);
            variance /= s;
            for (int i = 0; i < s; i++) expected[p * s + i] = (float)((x[p * s + i] - mu) / Math.Sqrt(variance + 1e-5) * scale[p % c] + bias[p % c]);
        }
        GroupNormFast.InstanceNorm(n, c, s, 1e-5f, x, scale, bias, actual, [], []);
        AssertClose(expected, actual, 1e-5, "fast instance norm");
        GroupNormReference.InstanceNorm(n, c, s, 1e-5f, x, scale, bias, actual, [], []);
        AssertClose(expected, actual, 1e-5, "reference instance norm");
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void LayerNorm_reference_backward_matches_finite_differences(bool affine)
    {
        int rows = 4, dim = 7;
        var x = RandomDoubles(1, rows * dim, 2.0);
        var gamma = affine ? RandomDoubles(2, dim) : [];
        var beta = affine ? RandomDoubles(3, dim) : [];
        var r = RandomDoubles(4, rows * dim);
        var y = new double[x.Length];
        var mean = new double[rows];
        var rstd = new double[rows];
        double Loss()
        {
            LayerNormReference.Forward(rows, dim, 1e-5, x, gamma, beta, y, mean, rstd);
            return Dot(r, y);
        }
        Loss();
        var dx = new double[x.Length];
        var dgamma = new double[affine ? dim : 0];
        var dbeta = new double[affine ? dim : 0];
        LayerNormReference.Backward(rows, dim, x, gamma, mean, rstd, r, dx, dgamma, dbeta);
        CheckGradient("dx", x, dx, Loss);
        if (affine)
        {
            CheckGradient("dgamma", gamma, dgamma, Loss);
            CheckGradient("dbeta", beta, dbeta, Loss);
        }
    }

    [Theory]
    [InlineData(37, 77)]
    [InlineData(513, 33)]
    [InlineData(5, 1)]
    [InlineData(300, 320)]
    public void LayerNorm_fast_matches_reference(int rows, int dim)
    {
        var x = NormalFloats(1, rows * dim, 2.0, -1.0);
        var gamma = RandomFloats(2, dim);
        var beta = RandomFloats(3, dim);
        var dy = RandomFloats(4, rows * dim);
        var (yRef, mRef, rRef) = (new float[x.Length], new float[rows], new float[rows]);
        var (yFast, mFast, rFast) = (new float[x.Length], new float[rows], new float[rows]);
        LayerNormReference.Forward(rows, dim, 1e-5f, x, gamma, beta, yRef, mRef, rRef);
        LayerNormFast.Forward(rows, dim, 1e-5f, x, gamma, beta, yFast, mFast, rFast);
        AssertClose(yRef, yFast, 1e-5, "y");
        AssertClose(rRef, rFast, 1e-5, "rstd");
        var (dxRef, dgRef, dbRef) = (new float[x.Length], new float[dim], new float[dim]);
        var (dxFast, dgFast, dbFast) = (new float[x.Length], new float[dim], new float[dim]);
        LayerNormReference.Backward(rows, dim, x, gamma, mRef, rRef, dy, dxRef, dgRef, dbRef);
        LayerNormFast.Backward(rows, dim, x, gamma, mRef, rRef, dy, dxFast, dgFast, dbFast);
        AssertClose(dxRef, dxFast, 1e-5, "dx");
        AssertClose(dgRef, dgFast, 1e-5, "dgamma");
        AssertClose(dbRef, dbFast, 1e-5, "dbeta");
        LayerNormReference.Backward(rows, dim, x, [], mRef, rRef, dy, dxRef, [], []);
        LayerNormFast.Backward(rows, dim, x, [], mRef, rRef, dy, dxFast, [], []);
        AssertClose(dxRef, dxFast, 1e-5, "dx without gamma");
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Softmax_is_safe_with_infinite_and_huge_negative_masks(bool fast)
    {
        const float Mask = -3.4028235e38f; // torch.finfo(float32).min, CLIP's causal mask value
        float ninf = float.NegativeInfinity;
        float[] x =
        [
            0f, ninf, 1f, ninf,          // -inf entries drop out
            ninf, ninf, ninf, ninf,      // all -inf → zeros (documented)
            2f, Mask, Mask, Mask,        // finite mask → one-hot
            Mask, Mask, Mask, Mask,      // all-mask row is uniform, as in PyTorch
            1000f, 999f, -1000f, 0f,     // large logits do not overflow
        ];
        var y = new float[x.Length];
        if (fast) SoftmaxFast.Forward(5, 4, x, y); else SoftmaxReference.Forward(5, 4, x, y);
        double e = Math.E;
        float[] expected =
        [
            (float)(1 / (1 + e)), 0f, (float)(e / (1 + e)), 0f,
            0f, 0f, 0f, 0f,
            1f, 0f, 0f, 0f,
            0.25f, 0.25f, 0.25f, 0.25f,
            (float)(e / (1 + e)), (float)(1 / (1 + e)), 0f, 0f,
        ];
        AssertClose(expected, y, 1e-6, "softmax");
    }

    [Fact]
    public void Softmax_reference_backward_matches_finite_differences()
    {
        int rows = 3, dim = 6;
        var x = RandomDoubles(1, rows * dim, 3.0);
        var r = RandomDoubles(2, rows * dim);
        var y = new double[x.Length];
        double Loss()
        {
            SoftmaxReference.Forward(rows, dim, x, y);
            return Dot(r, y);
        }
        Loss();
        var dx = new double[x.Length];
        SoftmaxReference.Backward(rows, dim, y, r, dx);
        CheckGradient("dx", x, dx, Loss);
    }

    [Theory]
    [InlineData(37, 77)]
    [InlineData(1030, 257)]
    [InlineData(3, 1)]
    public void Softmax_fast_matches_reference(int rows, int dim)
    {
        var x = NormalFloats(1, rows * dim, 4.0);
        x[0] = float.NegativeInfinity;
        var dy = RandomFloats(2, rows * dim);
        var yRef = new float[x.Length];
        var yFast = new float[x.Length];
        SoftmaxReference.Forward(rows, dim, x, yRef);
        SoftmaxFast.Forward(rows, dim, x, yFast);
        AssertClose(yRef, yFast, 1e-5, "y");
        var dxRef = new float[x.Length];
        var dxFast = new float[x.Length];
        SoftmaxReference.Backward(rows, dim, yRef, dy, dxRef);
        SoftmaxFast.Backward(rows, dim, yRef, dy, dxFast);
        AssertClose(dxRef, dxFast, 1e-5, "dx");
    }
}
