using Xunit;

namespace CudaDream.Engine.Tests.Cpu;

/// <summary>Random inputs and the finite-difference gradient check used by the kernel tests.</summary>
internal static class KernelTestSupport
{
    public static double[] RandomDoubles(int seed, int length, double scale = 1.0)
    {
        var rng = new System.Random(seed);
        var r = new double[length];
        for (int i = 0; i < length; i++) r[i] = (rng.NextDouble() * 2 - 1) * scale;
        return r;
    }

    public static float[] RandomFloats(int seed, int length, double scale = 1.0)
    {
        var rng = new System.Random(seed);
        var r = new float[length];
        for (int i = 0; i < length; i++) r[i] = (float)((rng.NextDouble() * 2 - 1) * scale);
        return r;
    }

    /// <summary>Standard normal samples (Box–Muller), for inputs whose statistics matter.</summary>
    public static float[] NormalFloats(int seed, int length, double std = 1.0, double mean = 0.0)
    {
        var rng = new System.Random(seed);
        var r = new float[length];
        for (int i = 0; i < length; i++)
        {
            double u1 = 1.0 - rng.NextDouble(), u2 = rng.NextDouble();
            r[i] = (float)(mean + std * Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2));
        }
        return r;
    }

    public static double Dot(ReadOnlySpan<double> a, ReadOnlySpan<double> b)
    {
        double s = 0;
        for (int i = 0; i < a.Length; i++) s += a[i] * b[i];
        return s;
    }

    /// <summary>
    /// Central-difference check of an analytic gradient, as torch.autograd.gradcheck does element by element:
    /// for every element of <paramref name="input"/>, (L(x+h) − L(x−h)) / 2h must match
    /// <paramref name="analytic"/> within |a − n| ≤ tol·max(1, |n|). <paramref name="loss"/> must read
    /// <paramref name="input"/> afresh on every call (the check perturbs it in place and restores it).
    /// </summary>
    public static void CheckGradient(string what, double[] input, ReadOnlySpan<double> analytic, Func<double> loss, double tol = 1e-6, double h = 1e-5)
    {
        Assert.Equal(input.Length, analytic.Length);
        double worst = 0;
        int worstAt = -1;
        for (int i = 0; i < input.Length; i++)
        {
            double saved = input[i];
            input[i] = saved + h;
            double plus = loss();
            input[i] = saved - h;
            double minus = loss();
            input[i] = saved;
            double numeric = (plus - minus) / (2 * h);
            double err = Math.Abs(analytic[i] - numeric) / Math.Max(1.0, Math.Abs(numeric));
            if (err > worst || double.IsNaN(err)) { worst = double.IsNaN(err) ? double.PositiveInfinity : err; worstAt = i; }
        }
        Assert.True(worst <= tol, $"{what}: finite-difference mismatch {worst:E2} at element {worstAt} (analytic {(worstAt >= 0 ? analytic[worstAt] : 0)})");
    }

    /// <summary>max|a−b| / max|expected| must be within tol.</summary>
    public static void AssertClose(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual, double tol, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        double maxRef = 0, maxDiff = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            maxRef = Math.Max(maxRef, Math.Abs(expected[i]));
            double d = Math.Abs((double)expected[i] - actual[i]);
            if (double.IsNaN(d) || double.IsNaN(actual[i])) d = double.PositiveInfinity;
            maxDiff = Math.Max(maxDiff, d);
        }
        double err = maxRef == 0 ? maxDiff : maxDiff / maxRef;
        Assert.True(err <= tol, $"{what}: relative max error {err:E3} > {tol:E1} (max |ref| {maxRef:G4})");
    }
}
