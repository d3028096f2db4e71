using System.Numerics;
using CudaDream.Engine.Backends.Cpu.Kernels;

namespace CudaDream.Engine.Ops;

/// <summary>
/// Elementwise activations with their backwards. Forward: y = f(x). Backward: dx = dy · f′(x), from the
/// forward's INPUT x (Sigmoid's from its output y, which is all it needs). Every output is overwritten;
/// x and y may be the same span in a forward (in place), dy and dx in a backward.
/// </summary>
public static class ActivationReference
{
    private const double InvSqrt2 = 0.70710678118654752440;
    private const double InvSqrt2Pi = 0.39894228040143267794; // 1/√(2π): the normal density's constant
    private const double QuickGeluAlpha = 1.702;

    /// <summary>GELU, exact erf form (Hendrycks &amp; Gimpel 2016): 0.5·x·(1 + erf(x/√2)).</summary>
    public static void Gelu<T>(ReadOnlySpan<T> x, Span<T> y) where T : unmanaged, IFloatingPointIeee754<T>
    {
        KernelChecks.Exact(y.Length, x.Length, nameof(y));
        for (int i = 0; i < x.Length; i++) y[i] = GeluValue(x[i]);
    }

    /// <summary>GELU′(x) = Φ(x) + x·φ(x) = 0.5·(1 + erf(x/√2)) + x·e^(−x²/2)/√(2π).</summary>
    public static void GeluBackward<T>(ReadOnlySpan<T> x, ReadOnlySpan<T> dy, Span<T> dx) where T : unmanaged, IFloatingPointIeee754<T>
    {
        CheckBackward(x.Length, dy.Length, dx.Length);
        for (int i = 0; i < x.Length; i++) dx[i] = dy[i] * GeluDerivative(x[i]);
    }

    /// <summary>
    /// GEGLU (Shazeer 2020) as diffusers computes it: input [R, 2F] with h = first F columns and
    /// g = last F columns of each row, out [R, F] = h · GELU(g).
    /// </summary>
    public static void Geglu<T>(int rows, int features, ReadOnlySpan<T> x, Span<T> y) where T : unmanaged, IFloatingPointIeee754<T>
    {
        CheckGeglu(rows, features, x.Length, y.Length);
        for (int r = 0; r < rows; r++)
        for (int f = 0; f < features; f++)
        {
            T h = x[r * 2 * features + f], g = x[r * 2 * features + features + f];
            y[r * features + f] = h * GeluValue(g);
        }
    }

    /// <summary>d input [R, 2F]: dh = dy·GELU(g), dg = dy·h·GELU′(g).</summary>
    public static void GegluBackward<T>(int rows, int features, ReadOnlySpan<T> x, ReadOnlySpan<T> dy, Span<T> dx) where T : unmanaged, IFloatingPointIeee754<T>
    {
        CheckGeglu(rows, features, x.Length, dy.Length);
        KernelChecks.Exact(dx.Length, x.Length, nameof(dx));
        for (int r = 0; r < rows; r++)
        for (int f = 0; f < features; f++)
        {
            int hi = r * 2 * features + f, gi = hi + features;
            T h = x[hi], g = x[gi], grad = dy[r * features + f];
            dx[hi] = grad * GeluValue(g);
            dx[gi] = grad * h * GeluDerivative(g);
        }
    }

    /// <summary>CLIP's quick_gelu: x·σ(1.702·x).</summary>
    public static void QuickGelu<T>(ReadOnlySpan<T> x, Span<T> y) where T : unmanaged, IFloatingPointIeee754<T>
    {
        KernelChecks.Exact(y.Length, x.Length, nameof(y));
        T alpha = T.CreateChecked(QuickGeluAlpha);
        for (int i = 0; i < x.Length; i++) y[i] = x[i] * SigmoidValue(alpha * x[i]);
    }

    /// <summary>d/dx x·σ(αx) = σ(αx)·(1 + αx·(1 − σ(αx))).</summary>
    public static void QuickGeluBackward<T>(ReadOnlySpan<T> x, ReadOnlySpan<T> dy, Span<T> dx) where T : unmanaged, IFloatingPointIeee754<T>
    {
        CheckBackward(x.Length, dy.Length, dx.Length);
        T alpha = T.CreateChecked(QuickGeluAlpha);
        for (int i = 0; i < x.Length; i++)
        {
            T ax = alpha * x[i], s = SigmoidValue(ax);
            dx[i] = dy[i] * s * (T.One + ax * (T.One - s));
        }
    }

    /// <summary>SiLU / swish (Elfwing et al. 2017): x·σ(x).</summary>
    public static void Silu<T>(ReadOnlySpan<T> x, Span<T> y) where T : unmanaged, IFloatingPointIeee754<T>
    {
        KernelChecks.Exact(y.Length, x.Length, nameof(y));
        for (int i = 0; i < x.Length; i++) y[i] = x[i] * SigmoidValue(x[i]);
    }

    /// <summary>SiLU′(x) = σ(x)·(1 + x·(1 − σ(x))).</summary>
    public static void SiluBackward<T>(ReadOnlySpan<T> x, ReadOnlySpan<T> dy, Span<T> dx) where T : unmanaged, IFloatingPointIeee754<T>
    {
        CheckBackward(x.Length, dy.Length, dx.Length);
        for (int i = 0; i < x.Length; i++)
        {
            T s = SigmoidValue(x[i]);
            dx[i] = dy[i] * s * (T.One + x[i] * (T.One - s));
        }
    }

    /// <summary>σ(x) = 1/(1 + e^(−x)).</summary>
    public static void Sigmoid<T>(ReadOnlySpan<T> x, Span<T> y) where T : unmanaged, IFloatingPointIeee754<T>
    {
        KernelChecks.Exact(y.Length, x.Length, nameof(y));
        for (int i = 0; i < x.Length; i++) y[i] = SigmoidValue(x[i]);
    }

    /// <summary>σ′ = y·(1 − y), from the forward's OUTPUT y.</summary>
    public static void SigmoidBackward<T>(ReadOnlySpan<T> y, ReadOnlySpan<T> dy, Span<T> dx) where T : unmanaged, IFloatingPointIeee754<T>
    {
        CheckBackward(y.Length, dy.Length, dx.Length);
        for (int i = 0; i < y.Length; i++) dx[i] = dy[i] * y[i] * (T.One - y[i]);
    }

    internal static T SigmoidValue<T>(T x) where T : unmanaged, IFloatingPointIeee754<T> => T.One / (T.One + T.Exp(-x));

    internal static T GeluValue<T>(T x) where T : unmanaged, IFloatingPointIeee754<T>
    {
        T half = T.CreateChecked(0.5);
        return half * x * (T.One + SpecialFunctions.Erf(x * T.CreateChecked(InvSqrt2)));
    }

    internal static T GeluDerivative<T>(T x) where T : unmanaged, IFloatingPointIeee754<T>
    {
        T half = T.CreateChecked(0.5);
        T cdf = half * (T.One + SpecialFunctions.Erf(x * T.CreateChecked(InvSqrt2)));
        T pdf = T.CreateChecked(InvSqrt2Pi) * T.Exp(-half * x * x);
        return cdf + x * pdf;
    }

    private static void CheckBackward(int x, int dy, int dx)
    {
        KernelChecks.Exact(dy, x, nameof(dy));
        KernelChecks.Exact(dx, x, nameof(dx));
    }

    private static void CheckGeglu(int rows, int features, int x, int y)
    {
        KernelChecks.NonNegative(rows, nameof(rows));
        KernelChecks.Positive(features, nameof(features));
        KernelChecks.Exact(x, 2L * rows * features, "x");
        KernelChecks.Exact(y, (long)rows * features, "y");
    }
}
