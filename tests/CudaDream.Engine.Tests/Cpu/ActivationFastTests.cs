using CudaDream.Engine.Backends.Cpu.Kernels;
using CudaDream.Engine.Ops;
using CudaDream.Engine.Randomness;
using CudaDream.TestSupport;
using Xunit;

namespace CudaDream.Engine.Tests.Cpu;

/// <summary>The fp32 GELU/GEGLU kernels against the reference (float64 erf) on odd sizes, forward and backward.</summary>
public class ActivationFastTests
{
    private static float[] Random(int n, ulong seed, float scale)
    {
        var a = new float[n];
        CounterRng.FillNormal(a, seed, 0, RandomPurpose.Noise);
        for (int i = 0; i < n; i++) a[i] *= scale;
        return a;
    }

    [Fact]
    public void FloatErfIsAccurate()
    {
        // Published values (Abramowitz & Stegun table 7.1) and the odd symmetry.
        foreach (var (x, erf) in new[] { (0.5, 0.5204998778130465), (1.0, 0.8427007929497149), (2.0, 0.9953222650189527), (-3.0, -0.9999779095030014), (0.01, 0.011283415555849618) })
            Assert.True(Math.Abs(ActivationFast.Erf((float)x) - erf) <= 2e-7, $"erf({x})");
        double worst = 0;
        for (int i = -4000; i <= 4000; i++)
        {
            float x = i / 1000f;
            worst = Math.Max(worst, Math.Abs(ActivationFast.Erf(x) - SpecialFunctions.Erf((double)x)));
        }
        Assert.True(worst <= 3e-7, $"worst absolute error {worst:E2}");
    }

    [Theory]
    [InlineData(1, 7)]
    [InlineData(37, 129)]
    [InlineData(300, 160)]
    [InlineData(700, 101)] // enough elements to split across threads; 8-lane vectors and a 5-element tail per row
    public void GegluMatchesReference(int rows, int features)
    {
        var x = Random(rows * 2 * features, 1, 3f);
        var dy = Random(rows * features, 2, 1f);
        var y = new float[rows * features]; var yr = new float[y.Length];
        ActivationFast.Geglu(rows, features, x, y);
        ActivationReference.Geglu(rows, features, x, yr);
        TensorAssert.Close(yr, y, 1e-6, "geglu");
        var dx = new float[x.Length]; var dxr = new float[x.Length];
        ActivationFast.GegluBackward(rows, features, x, dy, dx);
        ActivationReference.GegluBackward(rows, features, x, dy, dxr);
        TensorAssert.Close(dxr, dx, 1e-6, "geglu backward");
    }

    [Theory]
    [InlineData(1001)]
    [InlineData(70_003)] // split across threads
    public void GeluMatchesReference(int n)
    {
        var x = Random(n, 3, 4f);
        var dy = Random(n, 4, 1f);
        var y = new float[x.Length]; var yr = new float[x.Length];
        ActivationFast.Gelu(x, y);
        ActivationReference.Gelu(x, yr);
        TensorAssert.Close(yr, y, 1e-6, "gelu");
        var dx = new float[x.Length]; var dxr = new float[x.Length];
        ActivationFast.GeluBackward(x, dy, dx);
        ActivationReference.GeluBackward(x, dy, dxr);
        TensorAssert.Close(dxr, dx, 1e-6, "gelu backward");
    }
}
