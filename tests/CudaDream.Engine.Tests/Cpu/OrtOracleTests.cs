using CudaDream.Engine.Backends.Cpu.Kernels;
using CudaDream.Engine.Ops;
using Xunit;
using static CudaDream.Engine.Tests.Cpu.KernelTestSupport;
using static CudaDream.Engine.Tests.Cpu.OrtOracle;

namespace CudaDream.Engine.Tests.Cpu;

/// <summary>Forward semantics of the kernels against ONNX Runtime's implementation of the same ONNX operators.</summary>
public class OrtOracleTests
{
    [Theory]
    [MemberData(nameof(ConvKernelTests.Geometries), MemberType = typeof(ConvKernelTests))]
    public void Conv_forward_and_backward_data_match_onnx_runtime(string name, Conv2dGeometry g)
    {
        var x = RandomFloats(1, (int)g.InputLength);
        var w = RandomFloats(2, (int)g.WeightLength);
        var bias = RandomFloats(3, g.OutChannels);
        var attributes = new[]
        {
            Ints("kernel_shape", g.KernelH, g.KernelW), Ints("strides", g.StrideH, g.StrideW),
            Ints("pads", g.PadTop, g.PadLeft, g.PadBottom, g.PadRight), Ints("dilations", g.DilationH, g.DilationW),
            Int("group", g.Groups),
        };
        var expected = Run("Conv", attributes, new Input[]
        {
            new("x", x, [g.Batch, g.InChannels, g.Height, g.Width]),
            new("w", w, [g.OutChannels, g.InChannelsPerGroup, g.KernelH, g.KernelW]),
            new("b", bias, [g.OutChannels]),
        });
        var y = new float[g.OutputLength];
        ConvReference.Conv2dForward(g, x, w, bias, y);
        AssertClose(expected, y, 1e-5, name + " reference forward");
        ConvFast.Conv2dForward(g, x, w, bias, y);
        AssertClose(expected, y, 1e-5, name + " fast forward");

        // The data gradient of Conv is ConvTranspose with the same weight; output_padding restores the
        // rows/columns the forward's floor dropped.
        var dy = RandomFloats(4, (int)g.OutputLength);
        int outPadH = g.Height - (g.StrideH * (g.OutHeight - 1) + g.DilationH * (g.KernelH - 1) + 1 - g.PadTop - g.PadBottom);
        int outPadW = g.Width - (g.StrideW * (g.OutWidth - 1) + g.DilationW * (g.KernelW - 1) + 1 - g.PadLeft - g.PadRight);
        var transposeAttributes = attributes.Append(Ints("output_padding", outPadH, outPadW));
        var expectedDx = Run("ConvTranspose", transposeAttributes, new Input[]
        {
            new("dy", dy, [g.Batch, g.OutChannels, g.OutHeight, g.OutWidth]),
            new("w", w, [g.OutChannels, g.InChannelsPerGroup, g.KernelH, g.KernelW]),
        });
        var dx = new float[g.InputLength];
        ConvReference.Conv2dBackwardData(g, dy, w, dx);
        AssertClose(expectedDx, dx, 1e-5, name + " reference backward data");
        ConvFast.Conv2dBackwardData(g, dy, w, dx);
        AssertClose(expectedDx, dx, 1e-5, name + " fast backward data");
    }

    [Theory]
    [InlineData(4, 5, 8, 10)]
    [InlineData(3, 5, 7, 8)]
    [InlineData(6, 4, 4, 3)] // downscale
    public void Nearest_resize_matches_onnx_asymmetric_floor(int h, int w, int outH, int outW)
    {
        var x = RandomFloats(1, 2 * 3 * h * w);
        var expected = Run("Resize",
            new[] { String("mode", "nearest"), String("coordinate_transformation_mode", "asymmetric"), String("nearest_mode", "floor") },
            new Input[] { new("x", x, [2, 3, h, w]) },
            new[] { Int64Constant("sizes", 2, 3, outH, outW) }, nodeInputs: ["x", "", "", "sizes"]);
        var y = new float[2 * 3 * outH * outW];
        ResizeReference.NearestForward<float>(2, 3, h, w, outH, outW, x, y);
        AssertClose(expected, y, 0, "resize");
    }

    [Fact]
    public void Constant_pad_matches_onnx()
    {
        var x = RandomFloats(1, 2 * 3 * 4 * 5);
        var expected = Run("Pad", [String("mode", "constant")], new Input[] { new("x", x, [2, 3, 4, 5]) },
            new[] { Int64Constant("pads", 0, 0, 2, 0, 0, 0, 1, 3), FloatConstant("value", 0.25f) }, nodeInputs: ["x", "pads", "value"]);
        var y = new float[2 * 3 * 7 * 8];
        PadReference.ConstantForward<float>(2, 3, 4, 5, 2, 0, 1, 3, 0.25f, x, y);
        AssertClose(expected, y, 0, "pad");
    }

    [Fact]
    public void Softmax_matches_onnx_including_masked_entries()
    {
        var x = NormalFloats(1, 7 * 33, 5.0);
        for (int i = 0; i < x.Length; i += 5) x[i] = float.NegativeInfinity;
        for (int i = 2; i < x.Length; i += 7) x[i] = -3.4028235e38f;
        var expected = Run("Softmax", [Int("axis", -1)], new Input[] { new("x", x, [7, 33]) });
        var y = new float[x.Length];
        SoftmaxReference.Forward<float>(7, 33, x, y);
        AssertClose(expected, y, 1e-6, "reference softmax");
        SoftmaxFast.Forward(7, 33, x, y);
        AssertClose(expected, y, 1e-6, "fast softmax");
    }

    [Fact]
    public void Instance_and_layer_normalization_match_onnx()
    {
        var x = NormalFloats(1, 2 * 5 * 31, 2.0, 0.5);
        var scale = RandomFloats(2, 5);
        var bias = RandomFloats(3, 5);
        var expected = Run("InstanceNormalization", [Float("epsilon", 1e-5f)],
            new Input[] { new("x", x, [2, 5, 31]), new("scale", scale, [5]), new("bias", bias, [5]) });
        var y = new float[x.Length];
        GroupNormFast.InstanceNorm(2, 5, 31, 1e-5f, x, scale, bias, y, [], []);
        AssertClose(expected, y, 1e-5, "instance norm");

        var gamma = RandomFloats(4, 31);
        var beta = RandomFloats(5, 31);
        expected = Run("LayerNormalization", [Int("axis", -1), Float("epsilon", 1e-5f)],
            new Input[] { new("x", x, [10, 31]), new("gamma", gamma, [31]), new("beta", beta, [31]) });
        LayerNormFast.Forward(10, 31, 1e-5f, x, gamma, beta, y, [], []);
        AssertClose(expected, y, 1e-5, "layer norm");
        LayerNormReference.Forward(10, 31, 1e-5f, x, gamma, beta, y, [], []);
        AssertClose(expected, y, 1e-5, "layer norm reference");
    }

    [Fact]
    public void Erf_and_sigmoid_match_onnx()
    {
        var x = NormalFloats(1, 4001, 2.5);
        var expected = Run("Erf", [], new Input[] { new("x", x, [x.Length]) });
        var y = x.Select(SpecialFunctions.Erf).ToArray();
        double worstUlp = 0;
        for (int i = 0; i < x.Length; i++)
            worstUlp = Math.Max(worstUlp, Math.Abs(BitConverter.SingleToInt32Bits(y[i]) - BitConverter.SingleToInt32Bits(expected[i])));
        Assert.True(worstUlp <= 2, $"erf differs from ONNX Runtime's by {worstUlp} ulp");
        expected = Run("Sigmoid", [], new Input[] { new("x", x, [x.Length]) });
        ActivationReference.Sigmoid<float>(x, y);
        AssertClose(expected, y, 1e-6, "sigmoid");
    }

    [Fact]
    public void Gemm_matches_onnx_with_transposes_alpha_beta()
    {
        int m = 13, n = 17, k = 29;
        var a = RandomFloats(1, k * m); // stored transposed: [k, m]
        var b = RandomFloats(2, n * k); // stored transposed: [n, k]
        var c = RandomFloats(3, m * n);
        var expected = Run("Gemm", [Int("transA", 1), Int("transB", 1), Float("alpha", 0.5f), Float("beta", 2f)],
            new Input[] { new("a", a, [k, m]), new("b", b, [n, k]), new("c", c, [m, n]) });
        var y = (float[])c.Clone();
        GemmFast.Gemm(true, true, m, n, k, 0.5f, a, m, b, k, 2f, y, n);
        AssertClose(expected, y, 1e-5, "fast gemm");
        y = (float[])c.Clone();
        GemmReference.Gemm(true, true, m, n, k, 0.5f, a, m, b, k, 2f, y, n);
        AssertClose(expected, y, 1e-5, "reference gemm");
    }
}
