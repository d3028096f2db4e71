namespace CudaDream.Engine.Backends.Cpu.Kernels;

/// <summary>
/// fp32 GELU and GEGLU, forward and backward, with a float erf (the reference evaluates erf in double, which
/// dominated the tiny UNet's training step). erf comes from the Chebyshev-fitted erfc of Numerical Recipes
/// (Press et al., 3rd ed., §6.2.2: fractional error below 1.2e-7 everywhere), evaluated in float; rows are
/// split across threads when there is enough work. Same contracts as <see cref="ActivationReference"/>.
/// </summary>
public static class ActivationFast
{
    private const float InvSqrt2 = 0.70710678118654752f;
    private const float InvSqrt2Pi = 0.39894228040143268f;
    private const int ParallelThreshold = 1 << 15;

    /// <summary>erf(x) = 1 − erfc(x), erfc(z) = t·exp(−z² + P(t)), t = 1/(1 + z/2) for z = |x|.</summary>
    public static float Erf(float x)
    {
        float z = MathF.Abs(x);
        float t = 1f / (1f + 0.5f * z);
        float p = -1.26551223f + t * (1.00002368f + t * (0.37409196f + t * (0.09678418f + t * (-0.18628806f + t * (0.27886807f
            + t * (-1.13520398f + t * (1.48851587f + t * (-0.82215223f + t * 0.17087277f))))))));
        float erfc = t * MathF.Exp(-z * z + p);
        return x >= 0 ? 1f - erfc : erfc - 1f;
    }

    private static float Gelu(float x) => 0.5f * x * (1f + Erf(x * InvSqrt2));

    private static float GeluDerivative(float x) => 0.5f * (1f + Erf(x * InvSqrt2)) + x * InvSqrt2Pi * MathF.Exp(-0.5f * x * x);

    public static void Gelu(ReadOnlySpan<float> x, Span<float> y)
    {
        KernelChecks.Exact(y.Length, x.Length, nameof(y));
        for (int i = 0; i < x.Length; i++) y[i] = Gelu(x[i]);
    }

    public static void GeluBackward(ReadOnlySpan<float> x, ReadOnlySpan<float> dy, Span<float> dx)
    {
        KernelChecks.Exact(dy.Length, x.Length, nameof(dy));
        KernelChecks.Exact(dx.Length, x.Length, nameof(dx));
        for (int i = 0; i < x.Length; i++) dx[i] = dy[i] * GeluDerivative(x[i]);
    }

    public static unsafe void Geglu(int rows, int features, ReadOnlySpan<float> x, Span<float> y)
    {
        KernelChecks.Exact(x.Length, 2L * rows * features, nameof(x));
        KernelChecks.Exact(y.Length, (long)rows * features, nameof(y));
        fixed (float* px = x, py = y)
        {
            nint xb = (nint)px, yb = (nint)py;
            ForRows(rows, features, (start, end) =>
            {
                for (int r = start; r < end; r++)
                {
                    float* h = (float*)xb + (long)r * 2 * features, g = h + features, o = (float*)yb + (long)r * features;
                    for (int f = 0; f < features; f++) o[f] = h[f] * Gelu(g[f]);
                }
            });
        }
    }

    public static unsafe void GegluBackward(int rows, int features, ReadOnlySpan<float> x, ReadOnlySpan<float> dy, Span<float> dx)
    {
        KernelChecks.Exact(x.Length, 2L * rows * features, nameof(x));
        KernelChecks.Exact(dy.Length, (long)rows * features, nameof(dy));
        KernelChecks.Exact(dx.Length, x.Length, nameof(dx));
        fixed (float* px = x, pdy = dy, pdx = dx)
        {
            nint xb = (nint)px, dyb = (nint)pdy, dxb = (nint)pdx;
            ForRows(rows, features, (start, end) =>
            {
                for (int r = start; r < end; r++)
                {
                    float* h = (float*)xb + (long)r * 2 * features, g = h + features, d = (float*)dyb + (long)r * features;
                    float* dh = (float*)dxb + (long)r * 2 * features, dg = dh + features;
                    for (int f = 0; f < features; f++)
                    {
                        dh[f] = d[f] * Gelu(g[f]);
                        dg[f] = d[f] * h[f] * GeluDerivative(g[f]);
                    }
                }
            });
        }
    }

    /// <summary>Static row ranges (the split depends only on the sizes and the thread setting, so results do not depend on scheduling).</summary>
    private static void ForRows(int rows, int features, Action<int, int> body)
    {
        int parts = (long)rows * features < ParallelThreshold ? 1 : Math.Min(CpuKernelOptions.MaxDegreeOfParallelism, rows);
        if (parts <= 1) { body(0, rows); return; }
        int per = (rows + parts - 1) / parts;
        Parallel.For(0, parts, CpuKernelOptions.ParallelOptions(parts), p => body(p * per, Math.Min(rows, (p + 1) * per)));
    }
}
