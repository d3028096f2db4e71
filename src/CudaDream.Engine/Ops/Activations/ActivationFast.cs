using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using CudaDream.Engine.Backends.Cpu.Kernels;

namespace CudaDream.Engine.Ops;

/// <summary>
/// fp32 GELU and GEGLU, forward and backward, with a float erf (the reference evaluates erf in double, which
/// dominated the tiny UNet's training step). erf comes from the Chebyshev-fitted erfc of Numerical Recipes
/// (Press et al., 3rd ed., §6.2.2: fractional error below 1.2e-7 everywhere), evaluated in float; rows are
/// split across threads when there is enough work. With AVX2/FMA eight elements go at a time, the same formula with
/// <see cref="FloatExp"/> for e^x (the scalar loop's MathF.Exp call per element dominated the GEGLU of the tiny UNet).
/// Same contracts as <see cref="ActivationReference"/>.
/// </summary>
public static class ActivationFast
{
    private const float InvSqrt2 = 0.70710678118654752f;
    private const float InvSqrt2Pi = 0.39894228040143268f;
    /// <summary>Elements below this are not worth waking a second thread for (about 20 µs of work when vectorised).</summary>
    private const int ParallelThreshold = 1 << 16;

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

    public static unsafe void Gelu(ReadOnlySpan<float> x, Span<float> y)
    {
        KernelChecks.Exact(y.Length, x.Length, nameof(y));
        fixed (float* px = x, py = y)
        {
            nint xb = (nint)px, yb = (nint)py;
            ForRows(x.Length, 1, (start, end) =>
            {
                float* xs = (float*)xb, ys = (float*)yb;
                int i = start;
                if (FloatExp.IsSupported)
                    for (; i + 8 <= end; i += 8) Avx.Store(ys + i, Gelu(Avx.LoadVector256(xs + i)));
                for (; i < end; i++) ys[i] = Gelu(xs[i]);
            });
        }
    }

    public static unsafe void GeluBackward(ReadOnlySpan<float> x, ReadOnlySpan<float> dy, Span<float> dx)
    {
        KernelChecks.Exact(dy.Length, x.Length, nameof(dy));
        KernelChecks.Exact(dx.Length, x.Length, nameof(dx));
        fixed (float* px = x, pdy = dy, pdx = dx)
        {
            nint xb = (nint)px, dyb = (nint)pdy, dxb = (nint)pdx;
            ForRows(x.Length, 1, (start, end) =>
            {
                float* xs = (float*)xb, dys = (float*)dyb, dxs = (float*)dxb;
                int i = start;
                if (FloatExp.IsSupported)
                    for (; i + 8 <= end; i += 8)
                        Avx.Store(dxs + i, Avx.Multiply(Avx.LoadVector256(dys + i), GeluDerivative(Avx.LoadVector256(xs + i))));
                for (; i < end; i++) dxs[i] = dys[i] * GeluDerivative(xs[i]);
            });
        }
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
                    int f = 0;
                    if (FloatExp.IsSupported)
                        for (; f + 8 <= features; f += 8)
                            Avx.Store(o + f, Avx.Multiply(Avx.LoadVector256(h + f), Gelu(Avx.LoadVector256(g + f))));
                    for (; f < features; f++) o[f] = h[f] * Gelu(g[f]);
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
                    int f = 0;
                    if (FloatExp.IsSupported)
                        for (; f + 8 <= features; f += 8)
                        {
                            var gf = Avx.LoadVector256(g + f);
                            var df = Avx.LoadVector256(d + f);
                            var (gelu, derivative) = GeluAndDerivative(gf);
                            Avx.Store(dh + f, Avx.Multiply(df, gelu));
                            Avx.Store(dg + f, Avx.Multiply(Avx.Multiply(df, Avx.LoadVector256(h + f)), derivative));
                        }
                    for (; f < features; f++)
                    {
                        dh[f] = d[f] * Gelu(g[f]);
                        dg[f] = d[f] * h[f] * GeluDerivative(g[f]);
                    }
                }
            });
        }
    }

    /// <summary>Eight lanes of <see cref="Erf(float)"/>, with <see cref="FloatExp"/> for the exponential.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Erf(Vector256<float> x)
    {
        var z = Avx.AndNot(Vector256.Create(-0f), x);
        var t = Avx.Divide(Vector256.Create(1f), Fma.MultiplyAdd(z, Vector256.Create(0.5f), Vector256.Create(1f)));
        var p = Vector256.Create(0.17087277f);
        p = Fma.MultiplyAdd(p, t, Vector256.Create(-0.82215223f));
        p = Fma.MultiplyAdd(p, t, Vector256.Create(1.48851587f));
        p = Fma.MultiplyAdd(p, t, Vector256.Create(-1.13520398f));
        p = Fma.MultiplyAdd(p, t, Vector256.Create(0.27886807f));
        p = Fma.MultiplyAdd(p, t, Vector256.Create(-0.18628806f));
        p = Fma.MultiplyAdd(p, t, Vector256.Create(0.09678418f));
        p = Fma.MultiplyAdd(p, t, Vector256.Create(0.37409196f));
        p = Fma.MultiplyAdd(p, t, Vector256.Create(1.00002368f));
        p = Fma.MultiplyAdd(p, t, Vector256.Create(-1.26551223f));
        var erfc = Avx.Multiply(t, FloatExp.Exp(Fma.MultiplyAddNegated(z, z, p)));
        var positive = Avx.Subtract(Vector256.Create(1f), erfc);
        // erf(x) = sign(x)·(1 − erfc(|x|)): flip the sign bit where x is negative.
        return Avx.Xor(positive, Avx.And(x, Vector256.Create(-0f)));
    }

    /// <summary>Φ(x) = (1 + erf(x/√2))/2, the normal CDF, eight lanes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> NormalCdf(Vector256<float> x) =>
        Fma.MultiplyAdd(Erf(Avx.Multiply(x, Vector256.Create(InvSqrt2))), Vector256.Create(0.5f), Vector256.Create(0.5f));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Gelu(Vector256<float> x) => Avx.Multiply(x, NormalCdf(x));

    /// <summary>GELU'(x) = Φ(x) + x·φ(x).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> GeluDerivative(Vector256<float> x) => GeluAndDerivative(x).Derivative;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static (Vector256<float> Gelu, Vector256<float> Derivative) GeluAndDerivative(Vector256<float> x)
    {
        var cdf = NormalCdf(x);
        var density = Avx.Multiply(Vector256.Create(InvSqrt2Pi), FloatExp.Exp(Avx.Multiply(Vector256.Create(-0.5f), Avx.Multiply(x, x))));
        return (Avx.Multiply(x, cdf), Fma.MultiplyAdd(x, density, cdf));
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
