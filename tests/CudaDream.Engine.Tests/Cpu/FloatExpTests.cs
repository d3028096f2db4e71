using System.Runtime.Intrinsics;
using CudaDream.Engine.Backends.Cpu.Kernels;
using CudaDream.Engine.Ops;
using CudaDream.TestSupport;
using Xunit;

namespace CudaDream.Engine.Tests.Cpu;

/// <summary>The single-precision vector e^x of the attention and GELU kernels against the double-precision Math.Exp.</summary>
public class FloatExpTests
{
    [FactWhen(Requirement.Avx2Fma)]
    public void Matches_double_precision_exp_within_a_few_ulp_over_the_float_range()
    {
        double worst = 0;
        float worstAt = 0;
        var lanes = new float[8];
        for (int i = 0; i < 200_000; i++)
        {
            float x = -87.3f + i * (88.0f + 87.3f) / 200_000;
            for (int l = 0; l < 8; l++) lanes[l] = x + l * 1e-4f;
            var e = FloatExp.Exp(Vector256.Create(lanes));
            for (int l = 0; l < 8; l++)
            {
                double exact = Math.Exp(lanes[l]);
                double err = Math.Abs(e.GetElement(l) - exact) / exact;
                if (err > worst) { worst = err; worstAt = lanes[l]; }
            }
        }
        Assert.True(worst <= 3 * 5.96e-8, $"worst relative error {worst:E2} at x = {worstAt}");
    }

    [FactWhen(Requirement.Avx2Fma)]
    public void Masks_underflow_overflow_and_nan()
    {
        var e = FloatExp.Exp(Vector256.Create(float.NegativeInfinity, -1000f, -87.5f, 0f, 1f, 89f, float.PositiveInfinity, float.NaN));
        Assert.Equal(0f, e.GetElement(0));
        Assert.Equal(0f, e.GetElement(1));
        Assert.Equal(0f, e.GetElement(2));
        Assert.Equal(1f, e.GetElement(3));
        Assert.Equal(MathF.E, e.GetElement(4), 6);
        Assert.Equal(float.PositiveInfinity, e.GetElement(5));
        Assert.Equal(float.PositiveInfinity, e.GetElement(6));
        Assert.True(float.IsNaN(e.GetElement(7)));
    }
}
