using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace CudaDream.Engine.Backends.Cpu.Kernels;

/// <summary>
/// e^x for eight floats in single precision, Cephes' expf (S. L. Moshier, Cephes Math Library, expf.c): x = n·ln 2 + r
/// with |r| ≤ ln 2 / 2 (ln 2 split in two parts, Cody–Waite), e^r by a degree-6 polynomial, 2^n put into the exponent
/// bits. Relative error about 2 ulp. .NET's Vector256.Exp evaluates float in double precision, several times slower,
/// which dominated narrow-head attention (one exp per query–key pair). Inputs below ln(FLT_MIN) give 0 (so −inf
/// masks give exactly 0); from about 88.4 the result is +inf (e^x overflows at 88.72); NaN stays NaN. Requires AVX2 and FMA (<see cref="IsSupported"/>).
/// </summary>
internal static class FloatExp
{
    public static bool IsSupported => Avx2.IsSupported && Fma.IsSupported;

    private const float Log2E = 1.44269504088896341f;
    private const float Ln2High = 0.693359375f;
    private const float Ln2Low = -2.12194440e-4f;
    private const float Lowest = -87.3365447505f;   // ln(FLT_MIN): below it the result would be subnormal
    private const float Highest = 88.7228390520684f; // ln(FLT_MAX)

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Exp(Vector256<float> x)
    {
        // Max/Min return their second operand when either is NaN: x goes second so NaN survives the clamp.
        var clamped = Avx.Min(Vector256.Create(Highest), Avx.Max(Vector256.Create(Lowest), x));
        var n = Avx.RoundToNearestInteger(Avx.Multiply(clamped, Vector256.Create(Log2E)));
        var r = Fma.MultiplyAddNegated(n, Vector256.Create(Ln2High), clamped);
        r = Fma.MultiplyAddNegated(n, Vector256.Create(Ln2Low), r);
        var p = Vector256.Create(1.9875691500e-4f);
        p = Fma.MultiplyAdd(p, r, Vector256.Create(1.3981999507e-3f));
        p = Fma.MultiplyAdd(p, r, Vector256.Create(8.3334519073e-3f));
        p = Fma.MultiplyAdd(p, r, Vector256.Create(4.1665795894e-2f));
        p = Fma.MultiplyAdd(p, r, Vector256.Create(1.6666665459e-1f));
        p = Fma.MultiplyAdd(p, r, Vector256.Create(5.0000001201e-1f));
        var er = Fma.MultiplyAdd(p, Avx.Multiply(r, r), Avx.Add(r, Vector256.Create(1f)));
        var scale = Avx2.ShiftLeftLogical(Avx2.Add(Avx.ConvertToVector256Int32(n), Vector256.Create(127)), 23).AsSingle();
        var result = Avx.Multiply(er, scale);
        return Avx.BlendVariable(result, Vector256<float>.Zero, Avx.CompareLessThan(x, Vector256.Create(Lowest)));
    }
}
