using CudaDream.Engine.Randomness;
using Xunit;

namespace CudaDream.Engine.Tests.Randomness;

public class CounterRngTests
{
    // Random123 kat_vectors, lines "philox4x32 10 <ctr×4> <key×2> <expected×4>" (Salmon et al., SC'11).
    [Theory]
    [InlineData(0x00000000u, 0x00000000u, 0x00000000u, 0x00000000u, 0x00000000u, 0x00000000u, 0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u)]
    [InlineData(0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, 0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu)]
    [InlineData(0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u, 0xa4093822u, 0x299f31d0u, 0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u)]
    public void Philox4x32_10_matches_Random123_known_answers(uint c0, uint c1, uint c2, uint c3, uint k0, uint k1, uint e0, uint e1, uint e2, uint e3)
    {
        CounterRng.Philox4x32(c0, c1, c2, c3, k0, k1, out var o0, out var o1, out var o2, out var o3);
        Assert.Equal(new[] { e0, e1, e2, e3 }, new[] { o0, o1, o2, o3 });
    }

    [Fact]
    public void Keying_puts_seed_in_the_key_and_block_step_purpose_in_the_counter()
    {
        // seed = key words (0xa4093822, 0x299f31d0); block = (0x243f6a88, 0x85a308d3); step = 0x13198a2e;
        // purpose = 0x03707344: the third KAT, reached through the public keying.
        ulong seed = 0x299f31d0_a4093822UL;
        long block = unchecked((long)0x85a308d3_243f6a88UL) & long.MaxValue; // top bit cleared: elements are non-negative
        Assert.Equal(0x85a308d3_243f6a88UL & (ulong)long.MaxValue, (ulong)block);
        CounterRng.Philox4x32(0x243f6a88u, 0x05a308d3u, 0x13198a2eu, 0x03707344u, 0xa4093822u, 0x299f31d0u, out var e0, out var e1, out var e2, out var e3);
        long step = 0x13198a2e;
        var purpose = (RandomPurpose)0x03707344u;
        Assert.Equal(e0, CounterRng.Bits(seed, step, purpose, block * 4 + 0));
        Assert.Equal(e1, CounterRng.Bits(seed, step, purpose, block * 4 + 1));
        Assert.Equal(e2, CounterRng.Bits(seed, step, purpose, block * 4 + 2));
        Assert.Equal(e3, CounterRng.Bits(seed, step, purpose, block * 4 + 3));

        // And the all-zero KAT is seed 0, step 0, purpose 0, elements 0..3.
        Assert.Equal(0x6627e8d5u, CounterRng.Bits(0, 0, 0, 0));
        Assert.Equal(0x9b00dbd8u, CounterRng.Bits(0, 0, 0, 3));
    }

    [Fact]
    public void Uniform_is_top_24_bits_scaled()
    {
        // Element 0 of seed 0/step 0/purpose 0 is 0x6627e8d5 (KAT): (0x6627e8d5 >> 8) / 2^24 = 0x6627e8 / 16777216.
        Assert.Equal(0x6627e8 / 16777216.0f, CounterRng.Uniform(0, 0, 0, 0));
        var u = new float[4096];
        CounterRng.FillUniform(u, 7, 3, RandomPurpose.Crop);
        Assert.All(u, x => Assert.InRange(x, 0f, 0.99999995f));
    }

    [Fact]
    public void Normal_is_box_muller_of_the_block_words_in_double()
    {
        // Block 0 of seed 0/step 0/purpose 0 = the zero KAT: w = (6627e8d5, e169c58d, bc57ac4c, 9b00dbd8).
        static (double, double) Pair(uint a, uint b)
        {
            double u1 = (a + 1.0) / 4294967296.0;
            double r = Math.Sqrt(-2 * Math.Log(u1));
            double th = 2 * Math.PI * (b / 4294967296.0);
            return (r * Math.Cos(th), r * Math.Sin(th));
        }
        var (z0, z1) = Pair(0x6627e8d5, 0xe169c58d);
        var (z2, z3) = Pair(0xbc57ac4c, 0x9b00dbd8);
        var got = new float[4];
        CounterRng.FillNormal(got, 0, 0, 0);
        Assert.Equal(new[] { (float)z0, (float)z1, (float)z2, (float)z3 }, got);
        Assert.Equal((float)z2, CounterRng.Normal(0, 0, 0, 2));
    }

    [Fact]
    public void Fill_with_an_offset_equals_the_same_slice_of_a_full_fill()
    {
        var full = new float[103];
        CounterRng.FillNormal(full, 42, 5, RandomPurpose.Noise);
        var part = new float[50];
        CounterRng.FillNormal(part, 42, 5, RandomPurpose.Noise, firstElement: 37);
        Assert.Equal(full.AsSpan(37, 50).ToArray(), part);
        for (int i = 0; i < full.Length; i++) Assert.Equal(full[i], CounterRng.Normal(42, 5, RandomPurpose.Noise, i));
    }

    [Fact]
    public void Same_key_gives_same_numbers_and_streams_differ_by_seed_step_and_purpose()
    {
        float[] Draw(ulong seed, long step, RandomPurpose p) { var a = new float[256]; CounterRng.FillNormal(a, seed, step, p); return a; }
        var a = Draw(1, 10, RandomPurpose.Noise);
        Assert.Equal(a, Draw(1, 10, RandomPurpose.Noise));
        foreach (var other in new[] { Draw(2, 10, RandomPurpose.Noise), Draw(1, 11, RandomPurpose.Noise), Draw(1, 10, RandomPurpose.Timestep), Draw(1L << 32 | 1, 10, RandomPurpose.Noise) })
        {
            int equal = a.Zip(other).Count(p => p.First == p.Second);
            Assert.True(equal == 0, $"{equal} equal elements between streams that must be independent");
            // Independent streams: sample correlation near 0 (|r| < 5/sqrt(n)).
            double r = Correlation(a, other);
            Assert.True(Math.Abs(r) < 5 / Math.Sqrt(a.Length), $"correlation {r}");
        }
    }

    [Fact]
    public void A_million_normals_have_mean_0_variance_1_and_normal_tails()
    {
        var z = new float[1_000_000];
        CounterRng.FillNormal(z, 12345, 0, RandomPurpose.Noise);
        double mean = z.Average(x => (double)x);
        double var = z.Sum(x => (x - mean) * (x - mean)) / (z.Length - 1);
        double kurt = z.Sum(x => Math.Pow(x - mean, 4)) / z.Length / (var * var);
        // Standard errors: mean 1e-3, variance sqrt(2/n) = 1.4e-3, kurtosis sqrt(24/n) = 4.9e-3; bounds are 5 SE.
        Assert.InRange(mean, -5e-3, 5e-3);
        Assert.InRange(var, 1 - 7.1e-3, 1 + 7.1e-3);
        Assert.InRange(kurt, 3 - 2.5e-2, 3 + 2.5e-2);
        // P(|z| > 3) = 0.0026998 for N(0,1); binomial SE at n = 1e6 is 5.2e-5.
        double tail = z.Count(x => Math.Abs(x) > 3) / (double)z.Length;
        Assert.InRange(tail, 0.0026998 - 2.6e-4, 0.0026998 + 2.6e-4);
        // Lanes 0/1 (cos/sin of one pair) are uncorrelated.
        var l0 = Enumerable.Range(0, 250_000).Select(i => z[4 * i]).ToArray();
        var l1 = Enumerable.Range(0, 250_000).Select(i => z[4 * i + 1]).ToArray();
        Assert.True(Math.Abs(Correlation(l0, l1)) < 0.01);
    }

    [Fact]
    public void Uniform_histogram_passes_a_loose_chi_square()
    {
        const int bins = 100, n = 1_000_000;
        var u = new float[n];
        CounterRng.FillUniform(u, 99, 1, RandomPurpose.DataOrder);
        var counts = new int[bins];
        foreach (var x in u) counts[(int)(x * bins)]++;
        double expected = n / (double)bins;
        double chi2 = counts.Sum(c => (c - expected) * (c - expected) / expected);
        // 99 degrees of freedom: mean 99, sd 14; P(chi2 > 160) ≈ 1e-4.
        Assert.InRange(chi2, 40, 160);
    }

    [Fact]
    public void UniformInt_stays_in_range_and_is_flat()
    {
        const int n = 7, draws = 700_000;
        var counts = new int[n];
        for (int i = 0; i < draws; i++)
        {
            int v = CounterRng.UniformInt(5, 0, RandomPurpose.Timestep, i, n);
            Assert.InRange(v, 0, n - 1);
            counts[v]++;
        }
        double e = draws / (double)n;
        double chi2 = counts.Sum(c => (c - e) * (c - e) / e);
        Assert.InRange(chi2, 0, 25); // 6 dof, P(> 25) ≈ 3e-4
        Assert.Equal(0, CounterRng.UniformInt(5, 0, RandomPurpose.Timestep, 0, 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => CounterRng.UniformInt(5, 0, RandomPurpose.Timestep, 0, 0));
    }

    [Fact]
    public void Permutation_is_a_permutation_and_reproducible()
    {
        var p = CounterRng.Permutation(1000, 3, 2, RandomPurpose.DataOrder);
        Assert.Equal(Enumerable.Range(0, 1000), p.Order());
        Assert.Equal(p, CounterRng.Permutation(1000, 3, 2, RandomPurpose.DataOrder));
        Assert.NotEqual(p, CounterRng.Permutation(1000, 3, 3, RandomPurpose.DataOrder));
        Assert.Empty(CounterRng.Permutation(0, 3, 2, RandomPurpose.DataOrder));
        // Every position is equally likely to receive element 0 (3-element permutations over many steps).
        var counts = new int[3];
        for (int s = 0; s < 30_000; s++) counts[Array.IndexOf(CounterRng.Permutation(3, 11, s, RandomPurpose.DataOrder), 0)]++;
        Assert.All(counts, c => Assert.InRange(c, 9_500, 10_500));
    }

    [Fact]
    public void PhiloxNoise_advances_the_step_per_draw_and_RecordedNoise_replays()
    {
        var src = new PhiloxNoise(77, RandomPurpose.SamplerNoise);
        var d0 = new float[10]; var d1 = new float[10];
        src.Fill(d0); src.Fill(d1);
        var e0 = new float[10]; var e1 = new float[10];
        CounterRng.FillNormal(e0, 77, 0, RandomPurpose.SamplerNoise);
        CounterRng.FillNormal(e1, 77, 1, RandomPurpose.SamplerNoise);
        Assert.Equal(e0, d0); Assert.Equal(e1, d1);
        var resumed = new PhiloxNoise(77, RandomPurpose.SamplerNoise, firstStep: 1);
        var r1 = new float[10]; resumed.Fill(r1);
        Assert.Equal(e1, r1);

        var rec = new RecordedNoise(new[] { d0, d1 });
        var x = new float[10];
        rec.Fill(x); Assert.Equal(d0, x);
        rec.Fill(x); Assert.Equal(d1, x);
        Assert.Throws<InvalidOperationException>(() => rec.Fill(x));
    }

    private static double Correlation(float[] a, float[] b)
    {
        double ma = a.Average(x => (double)x), mb = b.Average(x => (double)x);
        double sab = 0, saa = 0, sbb = 0;
        for (int i = 0; i < a.Length; i++) { sab += (a[i] - ma) * (b[i] - mb); saa += (a[i] - ma) * (a[i] - ma); sbb += (b[i] - mb) * (b[i] - mb); }
        return sab / Math.Sqrt(saa * sbb);
    }
}
