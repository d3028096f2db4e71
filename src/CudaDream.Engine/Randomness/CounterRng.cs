using System.Runtime.CompilerServices;

namespace CudaDream.Engine.Randomness;

/// <summary>
/// Counter-based random numbers: Philox4x32-10 (Salmon, Moraes, Dror, Shaw, "Parallel Random Numbers: As Easy
/// as 1, 2, 3", SC'11). Every number is a pure function of (seed, step, purpose, element), so any backend
/// (cpu, emu, cuda) and any resumed run produce the same values without carrying generator state.
///
/// <para><b>Keying — fixed forever (changing it changes every image and every resumed run):</b></para>
/// <list type="bullet">
/// <item>key = (lo32(seed), hi32(seed))</item>
/// <item>counter = (lo32(block), hi32(block), (uint)step, (uint)purpose), block = element / 4</item>
/// <item>element i takes word i % 4 of its block's output (<see cref="Bits"/>)</item>
/// </list>
///
/// <para><b>Derived distributions (the contract a CUDA kernel must reproduce):</b></para>
/// <list type="bullet">
/// <item>Uniform float in [0,1): (w &gt;&gt; 8) · 2⁻²⁴ — exact in float32.</item>
/// <item>Standard normal: Box–Muller on the four words (w0..w3) of block i/4: lanes 0,1 use (w0, w1), lanes 2,3 use
/// (w2, w3). With u = (w_a + 1) · 2⁻³² ∈ (0,1] and θ = 2π · w_b · 2⁻³², lane 0/2 = √(−2 ln u) · cos θ and
/// lane 1/3 = √(−2 ln u) · sin θ. Everything is computed in float64 and rounded once to float32, so a kernel
/// doing the same in double precision gets the same floats. (Only where two libm implementations differ by
/// an ulp in double and the result lies on a float32 rounding boundary can one element differ by one float ulp;
/// that is of the order of 1e-8 of the elements.)</item>
/// <item>Integers in [0,n): Lemire's multiply-shift ⌊w · n / 2³²⌋ on one 32-bit word. Each value has probability
/// ⌊2³²/n⌋/2³² or ⌈2³²/n⌉/2³², a bias of at most n / 2³² relative (2.3e-7 for n = 1000).</item>
/// </list>
/// </summary>
public static class CounterRng
{
    // Philox4x32 multipliers and Weyl key increments (SC'11, Random123 philox.h).
    public const uint M0 = 0xD2511F53, M1 = 0xCD9E8D57;
    public const uint W0 = 0x9E3779B9, W1 = 0xBB67AE85;
    public const int Rounds = 10;

    private const double TwoPow32Inv = 1.0 / 4294967296.0;
    private const float TwoPow24Inv = 1.0f / 16777216.0f;

    /// <summary>The raw Philox4x32-10 bijection: 4 counter words and 2 key words in, 4 words out.</summary>
    public static void Philox4x32(uint c0, uint c1, uint c2, uint c3, uint k0, uint k1, out uint o0, out uint o1, out uint o2, out uint o3)
    {
        for (int round = 0; round < Rounds; round++)
        {
            if (round > 0) { k0 += W0; k1 += W1; }
            ulong p0 = (ulong)M0 * c0;
            ulong p1 = (ulong)M1 * c2;
            uint n0 = (uint)(p1 >> 32) ^ c1 ^ k0;
            uint n2 = (uint)(p0 >> 32) ^ c3 ^ k1;
            c1 = (uint)p1;
            c3 = (uint)p0;
            c0 = n0;
            c2 = n2;
        }
        o0 = c0; o1 = c1; o2 = c2; o3 = c3;
    }

    /// <summary>The four words of one block of the (seed, step, purpose) stream.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Block(ulong seed, long step, RandomPurpose purpose, long block, out uint w0, out uint w1, out uint w2, out uint w3)
    {
        if (block < 0) throw new ArgumentOutOfRangeException(nameof(block), "element index must not be negative");
        Philox4x32((uint)block, (uint)((ulong)block >> 32), (uint)step, (uint)purpose, (uint)seed, (uint)(seed >> 32), out w0, out w1, out w2, out w3);
    }

    /// <summary>The 32 random bits of one element.</summary>
    public static uint Bits(ulong seed, long step, RandomPurpose purpose, long element)
    {
        Block(seed, step, purpose, element >> 2, out var w0, out var w1, out var w2, out var w3);
        return (element & 3) switch { 0 => w0, 1 => w1, 2 => w2, _ => w3 };
    }

    /// <summary>Uniform float in [0,1) from one word: (w &gt;&gt; 8)·2⁻²⁴.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float ToUniform(uint w) => (w >> 8) * TwoPow24Inv;

    public static float Uniform(ulong seed, long step, RandomPurpose purpose, long element) =>
        ToUniform(Bits(seed, step, purpose, element));

    /// <summary>Fills with uniform floats in [0,1); destination[k] is element firstElement + k.</summary>
    public static void FillUniform(Span<float> destination, ulong seed, long step, RandomPurpose purpose, long firstElement = 0)
    {
        Fill(destination, seed, step, purpose, firstElement, static (w0, w1, w2, w3, lanes) =>
        {
            lanes[0] = ToUniform(w0); lanes[1] = ToUniform(w1); lanes[2] = ToUniform(w2); lanes[3] = ToUniform(w3);
        });
    }

    /// <summary>Standard normal float of one element (see the class summary for the exact formula).</summary>
    public static float Normal(ulong seed, long step, RandomPurpose purpose, long element)
    {
        Block(seed, step, purpose, element >> 2, out var w0, out var w1, out var w2, out var w3);
        Span<float> lanes = stackalloc float[4];
        BoxMuller(w0, w1, w2, w3, lanes);
        return lanes[(int)(element & 3)];
    }

    /// <summary>Fills with standard normal floats; destination[k] is element firstElement + k.</summary>
    public static void FillNormal(Span<float> destination, ulong seed, long step, RandomPurpose purpose, long firstElement = 0) =>
        Fill(destination, seed, step, purpose, firstElement, BoxMuller);

    /// <summary>Box–Muller on one block: (w0,w1) → lanes 0,1 and (w2,w3) → lanes 2,3, in float64, rounded once.</summary>
    public static void BoxMuller(uint w0, uint w1, uint w2, uint w3, Span<float> lanes)
    {
        BoxMullerPair(w0, w1, out lanes[0], out lanes[1]);
        BoxMullerPair(w2, w3, out lanes[2], out lanes[3]);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void BoxMullerPair(uint radiusWord, uint angleWord, out float z0, out float z1)
    {
        double u = (radiusWord + 1.0) * TwoPow32Inv;           // (0, 1]: ln never sees 0
        double radius = Math.Sqrt(-2.0 * Math.Log(u));
        double theta = 2.0 * Math.PI * (angleWord * TwoPow32Inv);
        z0 = (float)(radius * Math.Cos(theta));
        z1 = (float)(radius * Math.Sin(theta));
    }

    /// <summary>Integer in [0, n) by Lemire's multiply-shift on the element's 32 bits (bias ≤ n/2³², see summary).</summary>
    public static int UniformInt(ulong seed, long step, RandomPurpose purpose, long element, int n)
    {
        if (n <= 0) throw new ArgumentOutOfRangeException(nameof(n), $"n must be positive, got {n}");
        return (int)(((ulong)Bits(seed, step, purpose, element) * (uint)n) >> 32);
    }

    /// <summary>
    /// A permutation of 0..n-1 by Fisher–Yates: for i = n-1 down to 1, swap i with j = UniformInt(element: i, i + 1).
    /// </summary>
    public static int[] Permutation(int n, ulong seed, long step, RandomPurpose purpose)
    {
        if (n < 0) throw new ArgumentOutOfRangeException(nameof(n));
        var p = new int[n];
        for (int i = 0; i < n; i++) p[i] = i;
        for (int i = n - 1; i > 0; i--)
        {
            int j = UniformInt(seed, step, purpose, i, i + 1);
            (p[i], p[j]) = (p[j], p[i]);
        }
        return p;
    }

    private delegate void BlockTransform(uint w0, uint w1, uint w2, uint w3, Span<float> lanes);

    private static void Fill(Span<float> destination, ulong seed, long step, RandomPurpose purpose, long firstElement, BlockTransform transform)
    {
        if (firstElement < 0) throw new ArgumentOutOfRangeException(nameof(firstElement));
        Span<float> lanes = stackalloc float[4];
        long element = firstElement;
        int k = 0;
        while (k < destination.Length)
        {
            long block = element >> 2;
            int lane = (int)(element & 3);
            Block(seed, step, purpose, block, out var w0, out var w1, out var w2, out var w3);
            transform(w0, w1, w2, w3, lanes);
            for (; lane < 4 && k < destination.Length; lane++, k++, element++) destination[k] = lanes[lane];
        }
    }
}
