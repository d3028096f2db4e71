namespace CudaDream.Engine.Training.Optimizers;

/// <summary>
/// Block-wise dynamic quantization of Dettmers et al. 2022 ("8-bit Optimizers via Block-wise Quantization", §2):
/// a tensor is cut into blocks of <see cref="BlockSize"/> elements, each block is divided by its absolute maximum
/// (kept in fp32) and every element is stored as the index of the nearest value of an 8-bit code book.
/// <para>
/// The code books are the paper's data types. <b>Dynamic tree</b> (signed, for the first moment): bit 7 is the sign;
/// the number E of zero bits after it is the decimal exponent; the first one bit after them is an indicator; the
/// remaining F = 6 − E bits pick one of 2^F equal bins of the linear range [0.1, 1], whose midpoint is the fraction:
/// value = ±10^−E · (0.1 + (j + ½)·0.9/2^F). <b>Dynamic</b> (unsigned, for the second moment, which is never
/// negative): the sign bit is re-used as one more fraction bit, so E zeros then the indicator leave F = 7 − E bits.
/// In both, exponents run 0…6 (values down to about 10^−7); the two patterns with no indicator left (signed: 0000 0000
/// and 1000 0000; unsigned: 0000 0000 and 0000 0001) stand for 0 and 1, so 1·absmax is stored exactly. The books are
/// kept sorted (index = rank, not bit pattern) so that nearest-value lookup is a binary search.
/// </para>
/// </summary>
public static class DynamicQuantization
{
    public const int BlockSize = 2048;
    private const int MaxExponent = 6;

    internal static readonly float[] SignedBook = Build(signed: true);
    internal static readonly float[] UnsignedBook = Build(signed: false);

    /// <summary>The signed dynamic tree code book, 256 values ascending.</summary>
    public static IReadOnlyList<float> Signed => SignedBook;

    /// <summary>The unsigned dynamic code book, 256 values ascending.</summary>
    public static IReadOnlyList<float> Unsigned => UnsignedBook;

    private static float[] Build(bool signed)
    {
        var values = new List<double> { 0.0, 1.0 };
        for (int e = 0; e <= MaxExponent; e++)
        {
            int fractionBits = (signed ? 6 : 7) - e;
            int bins = 1 << fractionBits;
            for (int j = 0; j < bins; j++)
            {
                double v = Math.Pow(10, -e) * (0.1 + (j + 0.5) * 0.9 / bins);
                values.Add(v);
                if (signed) values.Add(-v);
            }
        }
        if (values.Count != 256) throw new InvalidOperationException($"code book has {values.Count} values");
        return values.Select(v => (float)v).Order().ToArray();
    }

    public static int Blocks(int length) => (length + BlockSize - 1) / BlockSize;

    /// <summary>The index of the code book value nearest to <paramref name="x"/> (ties to the smaller value).</summary>
    public static byte Nearest(IReadOnlyList<float> bookList, float x) => Nearest(AsArray(bookList), x);

    private static float[] AsArray(IReadOnlyList<float> b) => b as float[] ?? b.ToArray();

    internal static byte Nearest(float[] book, float x)
    {
        int lo = 0, hi = book.Length - 1;
        if (x <= book[0]) return 0;
        if (x >= book[hi]) return (byte)hi;
        if (float.IsNaN(x)) return 0;
        while (hi - lo > 1)
        {
            int mid = (lo + hi) >> 1;
            if (book[mid] <= x) lo = mid; else hi = mid;
        }
        return (byte)(x - book[lo] <= book[hi] - x ? lo : hi);
    }

    /// <summary>Quantizes one block: returns its absmax and writes each element's code (absmax 0: every code is 0's).</summary>
    public static float QuantizeBlock(IReadOnlyList<float> bookList, ReadOnlySpan<float> values, Span<byte> codes)
    {
        var book = AsArray(bookList);
        float absmax = 0;
        foreach (var v in values) absmax = Math.Max(absmax, Math.Abs(v));
        if (absmax == 0 || !float.IsFinite(absmax))
        {
            byte zero = Nearest(book, 0f);
            codes.Fill(zero);
            return absmax == 0 ? 0 : absmax;
        }
        float inverse = 1f / absmax;
        for (int i = 0; i < values.Length; i++) codes[i] = Nearest(book, values[i] * inverse);
        return absmax;
    }

    public static void DequantizeBlock(IReadOnlyList<float> bookList, ReadOnlySpan<byte> codes, float absmax, Span<float> values)
    {
        var book = AsArray(bookList);
        for (int i = 0; i < codes.Length; i++) values[i] = book[codes[i]] * absmax;
    }

    /// <summary>A whole tensor, block by block: codes (one per element) and one absmax per block.</summary>
    public static void Quantize(IReadOnlyList<float> book, ReadOnlySpan<float> values, Span<byte> codes, Span<float> absmax)
    {
        for (int b = 0, start = 0; start < values.Length; b++, start += BlockSize)
        {
            int n = Math.Min(BlockSize, values.Length - start);
            absmax[b] = QuantizeBlock(book, values.Slice(start, n), codes.Slice(start, n));
        }
    }

    public static void Dequantize(IReadOnlyList<float> book, ReadOnlySpan<byte> codes, ReadOnlySpan<float> absmax, Span<float> values)
    {
        for (int b = 0, start = 0; start < codes.Length; b++, start += BlockSize)
        {
            int n = Math.Min(BlockSize, codes.Length - start);
            DequantizeBlock(book, codes.Slice(start, n), absmax[b], values.Slice(start, n));
        }
    }
}
