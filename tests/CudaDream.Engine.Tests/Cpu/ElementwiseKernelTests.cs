using CudaDream.Engine.Backends.Cpu.Kernels;
using CudaDream.Engine.Ops;
using Xunit;
using static CudaDream.Engine.Tests.Cpu.KernelTestSupport;

namespace CudaDream.Engine.Tests.Cpu;

/// <summary>Activations, nearest resize, constant pad, the MSE loss and the timestep embedding.</summary>
public class ElementwiseKernelTests
{
    [Theory]
    // GELU(x) = x·Φ(x) with Φ the standard normal CDF: Φ(1) = 0.8413447460685429, Φ(−1) = 0.15865525393145707,
    // Φ(2) = 0.9772498680518208 (published normal-table values).
    [InlineData(1.0, 0.8413447460685429)]
    [InlineData(-1.0, -0.15865525393145707)]
    [InlineData(2.0, 1.9544997361036416)]
    [InlineData(0.0, 0.0)]
    public void Gelu_matches_x_times_the_normal_cdf(double x, double expected)
    {
        var y = new double[1];
        ActivationReference.Gelu(new[] { x }, y);
        Assert.Equal(expected, y[0], 14);
    }

    [Fact]
    public void Silu_sigmoid_quickgelu_match_their_definitions_at_known_points()
    {
        var y = new double[3];
        ActivationReference.Sigmoid(new[] { 0.0, Math.Log(3), -Math.Log(3) }, y);
        Assert.Equal(new[] { 0.5, 0.75, 0.25 }, y.Select(v => Math.Round(v, 15)));
        ActivationReference.Silu(new[] { 0.0, Math.Log(3), -Math.Log(3) }, y);
        Assert.Equal(0.75 * Math.Log(3), y[1], 15);
        // quick_gelu(x) = x·σ(1.702x): at x = ln(3)/1.702, σ = 3/4
        ActivationReference.QuickGelu(new[] { Math.Log(3) / 1.702 }, y.AsSpan(0, 1));
        Assert.Equal(0.75 * Math.Log(3) / 1.702, y[0], 15);
    }

    public enum Activation { Gelu, QuickGelu, Silu, Sigmoid }

    [Theory]
    [InlineData(Activation.Gelu)]
    [InlineData(Activation.QuickGelu)]
    [InlineData(Activation.Silu)]
    [InlineData(Activation.Sigmoid)]
    public void Activation_backward_matches_finite_differences(Activation kind)
    {
        var x = RandomDoubles(1, 41, 4.0);
        var r = RandomDoubles(2, 41);
        var y = new double[41];
        void Forward()
        {
            switch (kind)
            {
                case Activation.Gelu: ActivationReference.Gelu<double>(x, y); break;
                case Activation.QuickGelu: ActivationReference.QuickGelu<double>(x, y); break;
                case Activation.Silu: ActivationReference.Silu<double>(x, y); break;
                default: ActivationReference.Sigmoid<double>(x, y); break;
            }
        }
        double Loss() { Forward(); return Dot(r, y); }
        Forward();
        var dx = new double[41];
        switch (kind)
        {
            case Activation.Gelu: ActivationReference.GeluBackward<double>(x, r, dx); break;
            case Activation.QuickGelu: ActivationReference.QuickGeluBackward<double>(x, r, dx); break;
            case Activation.Silu: ActivationReference.SiluBackward<double>(x, r, dx); break;
            default: ActivationReference.SigmoidBackward<double>(y, r, dx); break;
        }
        CheckGradient(kind.ToString(), x, dx, Loss);
    }

    [Fact]
    public void Geglu_gates_the_first_half_with_gelu_of_the_second_and_its_backward_matches_finite_differences()
    {
        int rows = 3, f = 5;
        var x = RandomDoubles(1, rows * 2 * f, 3.0);
        var y = new double[rows * f];
        ActivationReference.Geglu(rows, f, x, y);
        var g = new double[1];
        ActivationReference.Gelu(new[] { x[1 * 2 * f + f + 2] }, g);
        Assert.Equal(x[1 * 2 * f + 2] * g[0], y[1 * f + 2], 15);

        var r = RandomDoubles(2, rows * f);
        double Loss() { ActivationReference.Geglu(rows, f, x, y); return Dot(r, y); }
        var dx = new double[x.Length];
        ActivationReference.GegluBackward(rows, f, x, r, dx);
        CheckGradient("geglu", x, dx, Loss);
    }

    [Fact]
    public void Nearest_resize_doubles_pixels_and_floors_non_integer_scales()
    {
        double[] x = [1, 2, 3, 4];
        var y = new double[16];
        ResizeReference.NearestForward(1, 1, 2, 2, 4, 4, x, y);
        Assert.Equal(new double[] { 1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4 }, y);
        // 3 → 5 columns: src = floor(dst·3/5) = 0,0,1,1,2 (ONNX asymmetric + floor).
        var y2 = new double[5];
        ResizeReference.NearestForward(1, 1, 1, 3, 1, 5, new double[] { 7, 8, 9 }, y2);
        Assert.Equal(new double[] { 7, 7, 8, 8, 9 }, y2);
        // Backward sums the four copies of each pixel.
        var dx = new double[4];
        ResizeReference.NearestBackward(1, 1, 2, 2, 4, 4, Enumerable.Range(0, 16).Select(i => (double)i).ToArray(), dx);
        Assert.Equal(new double[] { 0 + 1 + 4 + 5, 2 + 3 + 6 + 7, 8 + 9 + 12 + 13, 10 + 11 + 14 + 15 }, dx);
    }

    [Fact]
    public void Resize_backward_matches_finite_differences()
    {
        var x = RandomDoubles(1, 2 * 3 * 4 * 5);
        var r = RandomDoubles(2, 2 * 3 * 7 * 11);
        var y = new double[r.Length];
        double ResizeLoss() { ResizeReference.NearestForward(2, 3, 4, 5, 7, 11, x, y); return Dot(r, y); }
        var dx = new double[x.Length];
        ResizeReference.NearestBackward(2, 3, 4, 5, 7, 11, r, dx);
        CheckGradient("resize", x, dx, ResizeLoss);
    }

    [Fact]
    public void Pad_places_the_input_and_fills_the_border()
    {
        var y = new double[3 * 4];
        PadReference.ConstantForward(1, 1, 2, 2, 1, 0, 0, 2, -1.0, new double[] { 1, 2, 3, 4 }, y);
        Assert.Equal(new double[] { -1, -1, -1, -1, 1, 2, -1, -1, 3, 4, -1, -1 }, y);
    }

    [Fact]
    public void Weighted_mse_is_torch_mean_mse_with_unit_weights_and_weights_samples_otherwise()
    {
        double[] pred = [1, 2, 3, 4, 5, 6], target = [0, 2, 5, 4, 5, 9];
        // per sample (E = 3): [(1 + 0 + 4)/3, (0 + 0 + 9)/3] = [5/3, 3]; mean over all 6 elements = 14/6.
        var perSample = new double[2];
        Assert.Equal(14.0 / 6, LossReference.WeightedMse(2, 3, pred, target, ReadOnlySpan<double>.Empty, perSample), 15);
        Assert.Equal(new[] { 5.0 / 3, 3.0 }, perSample);
        // weights [1, 0.5]: (5/3 + 0.5·3) / 2
        Assert.Equal((5.0 / 3 + 1.5) / 2, LossReference.WeightedMse(2, 3, pred, target, new double[] { 1, 0.5 }), 15);
    }

    [Fact]
    public void Weighted_mse_backward_matches_finite_differences()
    {
        var pred = RandomDoubles(1, 4 * 7);
        var target = RandomDoubles(2, 4 * 7);
        double[] weights = [1, 0.3, 2, 1];
        var dpred = new double[pred.Length];
        LossReference.WeightedMseBackward(4, 7, pred, target, weights, 1.7, dpred);
        CheckGradient("mse", pred, dpred, () => 1.7 * LossReference.WeightedMse(4, 7, pred, target, weights));
    }

    [Fact]
    public void Timestep_embedding_matches_its_closed_form()
    {
        // dim 6, half 3, shift 1: freq_i = 10000^(−i/2) = 1, 0.01, 0.0001; flip → [cos, sin].
        var emb = new double[6];
        TimestepEmbeddingReference.Forward(1, 6, new double[] { 50 }, emb, flipSinToCos: true, 1.0, 1.0, 10000.0);
        double[] args = [50, 0.5, 0.005];
        for (int i = 0; i < 3; i++)
        {
            Assert.Equal(Math.Cos(args[i]), emb[i], 13);
            Assert.Equal(Math.Sin(args[i]), emb[3 + i], 13);
        }
        var odd = new double[5];
        TimestepEmbeddingReference.Forward(1, 5, new double[] { 3 }, odd, flipSinToCos: false, 0.0, 1.0, 10000.0);
        Assert.Equal(Math.Sin(3), odd[0], 14);
        Assert.Equal(0.0, odd[4]);
    }
}
