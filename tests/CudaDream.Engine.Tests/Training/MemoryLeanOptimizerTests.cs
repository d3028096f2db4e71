using CudaDream.Engine.Training;
using CudaDream.Engine.Training.Optimizers;
using Xunit;

namespace CudaDream.Engine.Tests.Training;

/// <summary>
/// The 8-bit AdamW's code books and block quantization against Dettmers et al. 2022's definition (decoded here from
/// bit patterns, independently of how the optimizer builds them), Prodigy and Lion step by step against their papers'
/// algorithms evaluated in double precision on a 3-parameter quadratic, EMA's decay against diffusers' formula, and
/// exact resume through every new optimizer's checkpoint state.
/// </summary>
public class MemoryLeanOptimizerTests
{
    // ---- dynamic (tree) quantization ----

    /// <summary>A signed dynamic-tree byte decoded as the paper describes it: sign, E zeros, indicator 1, 6 − E fraction bits.</summary>
    private static double DecodeSigned(int b)
    {
        int sign = b >> 7, rest = b & 0x7F;
        if (rest == 0) return sign == 1 ? 1.0 : 0.0; // the two patterns without an indicator bit
        int highest = 31 - System.Numerics.BitOperations.LeadingZeroCount((uint)rest); // 0..6
        int e = 6 - highest, f = 6 - e;
        int j = rest & ((1 << f) - 1);
        return (sign == 1 ? -1 : 1) * Math.Pow(10, -e) * (0.1 + (j + 0.5) * 0.9 / (1 << f));
    }

    /// <summary>An unsigned dynamic byte: no sign, E zeros, indicator, 7 − E fraction bits; 0 and 1 have no indicator left.</summary>
    private static double DecodeUnsigned(int b)
    {
        if (b == 0) return 0.0;
        if (b == 1) return 1.0;
        int highest = 31 - System.Numerics.BitOperations.LeadingZeroCount((uint)b); // 1..7
        int e = 7 - highest, f = 7 - e;
        int j = b & ((1 << f) - 1);
        return Math.Pow(10, -e) * (0.1 + (j + 0.5) * 0.9 / (1 << f));
    }

    [Fact]
    public void Code_books_are_the_papers_dynamic_tree_and_dynamic_types()
    {
        var signed = Enumerable.Range(0, 256).Select(b => (float)DecodeSigned(b)).Order().ToArray();
        var unsigned = Enumerable.Range(0, 256).Select(b => (float)DecodeUnsigned(b)).Order().ToArray();
        Assert.Equal(signed, DynamicQuantization.Signed);
        Assert.Equal(unsigned, DynamicQuantization.Unsigned);
        Assert.Equal(256, DynamicQuantization.Signed.Distinct().Count());
        Assert.Equal(256, DynamicQuantization.Unsigned.Distinct().Count());
        // Values worked by hand: the largest fraction of E = 0 with 6 bits is 0.1 + 63.5·0.9/64 = 0.99296875; the
        // smallest positive value is 10⁻⁶·(0.1 + 0.5·0.9) = 5.5e-7 (signed) and 10⁻⁶·(0.1 + 0.5·0.9/2) = 3.25e-7 (unsigned).
        Assert.Equal(1.0f, DynamicQuantization.Signed[255]);
        Assert.Equal(0.99296875f, DynamicQuantization.Signed[254]);
        Assert.Equal(-0.99296875f, DynamicQuantization.Signed[0]);
        Assert.Equal(5.5e-7f, DynamicQuantization.Signed.Where(v => v > 0).Min());
        Assert.Equal(0f, DynamicQuantization.Unsigned[0]);
        Assert.Equal(3.25e-7f, DynamicQuantization.Unsigned[1]);
        Assert.Equal(0.1f + 127.5f * 0.9f / 128f, DynamicQuantization.Unsigned[254], 6);
        // 2^(6−E) values per exponent and sign: 64 in [0.1, 1), 32 in [0.01, 0.1), …, 1 in [1e-7, 1e-6).
        for (int e = 0; e <= 6; e++)
            Assert.Equal(1 << (6 - e), DynamicQuantization.Signed.Count(v => v >= Math.Pow(10, -e - 1) && v < Math.Pow(10, -e)));
    }

    [Fact]
    public void Block_round_trip_stores_each_value_as_its_nearest_code_times_the_block_absmax()
    {
        var rng = new Random(7);
        var values = Enumerable.Range(0, 3000).Select(_ => (float)(Math.Exp(rng.NextDouble() * 10 - 10) * (rng.Next(2) * 2 - 1))).ToArray();
        values[17] = 5f; // the first block's absmax
        var codes = new byte[values.Length];
        var absmax = new float[DynamicQuantization.Blocks(values.Length)];
        Assert.Equal(2, absmax.Length);
        DynamicQuantization.Quantize(DynamicQuantization.Signed, values, codes, absmax);
        var back = new float[values.Length];
        DynamicQuantization.Dequantize(DynamicQuantization.Signed, codes, absmax, back);

        Assert.Equal(5f, absmax[0]);
        Assert.Equal(values.Skip(2048).Max(Math.Abs), absmax[1]);
        Assert.Equal(5f, back[17]); // 1·absmax is a code
        var book = DynamicQuantization.Signed;
        for (int i = 0; i < values.Length; i++)
        {
            float a = absmax[i / DynamicQuantization.BlockSize];
            double normalized = (double)(values[i] * (1f / a));
            // The nearest code by brute force.
            int best = 0;
            for (int c = 1; c < 256; c++)
                if (Math.Abs(book[c] - normalized) < Math.Abs(book[best] - normalized)) best = c;
            Assert.True(Math.Abs(book[codes[i]] - normalized) <= Math.Abs(book[best] - normalized), $"element {i}: code {codes[i]} is not the nearest to {normalized}");
            Assert.Equal(book[codes[i]] * a, back[i]);
        }
        // Relative error of a value v within the 7 decades is at most half a bin: bins of E = 0 are 0.9/64 wide.
        for (int i = 0; i < 2048; i++)
            if (Math.Abs(values[i]) >= 0.1f * 5f) Assert.True(Math.Abs(back[i] - values[i]) <= 0.5 * 0.9 / 64 * 5 * 1.0001, $"element {i}");
    }

    [Fact]
    public void AdamW8bit_state_is_at_most_three_tenths_of_AdamW_and_follows_it_closely()
    {
        var rng = new Random(3);
        var start = Enumerable.Range(0, 5000).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray();
        var target = Enumerable.Range(0, 5000).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray();
        (Optimizer Opt, float[] P, float[] G) Make(bool eightBit)
        {
            var p = (float[])start.Clone();
            var g = new float[p.Length];
            var groups = new[] { new ParameterGroup("g", [new OptimizerParameter("w", p, g)], 1e-2, 1e-2) };
            return (eightBit ? new AdamW8bit(groups) : new AdamW(groups), p, g);
        }
        var (full, pf, gf) = Make(false);
        var (q8, pq, gq) = Make(true);
        Assert.True(q8.StateBytes <= 0.3 * full.StateBytes, $"8-bit state {q8.StateBytes} B vs AdamW {full.StateBytes} B");
        double LossOf(float[] p) => p.Select((x, i) => 0.5 * (x - target[i]) * (x - target[i])).Sum();
        for (int step = 0; step < 50; step++)
        {
            for (int i = 0; i < pf.Length; i++) { gf[i] = pf[i] - target[i]; gq[i] = pq[i] - target[i]; }
            full.Step();
            q8.Step();
            double lf = LossOf(pf), lq = LossOf(pq);
            Assert.True(Math.Abs(lq - lf) <= 0.05 * lf, $"step {step}: 8-bit loss {lq} vs fp32 {lf}");
        }
    }

    // ---- Prodigy (Mishchenko & Defazio 2023, Algorithm 3) ----

    private static readonly double[] A = [1.0, 2.0, 0.5], C = [1.0, -2.0, 3.0];
    private static double[] Gradient(IReadOnlyList<double> x) => [A[0] * (x[0] - C[0]), A[1] * (x[1] - C[1]), A[2] * (x[2] - C[2])];

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Prodigy_follows_algorithm_3_step_by_step(bool biasCorrection)
    {
        double b1 = 0.9, b2 = 0.999, eps = 1e-8, d0 = 1e-6, lr = 1.0;
        var param = new float[] { 0.5f, 0.5f, 0.5f };
        var grad = new float[3];
        var group = new ParameterGroup("g", [new OptimizerParameter("x", param, grad)], lr);
        var opt = new Prodigy([group], new ProdigyOptions(b1, b2, eps, d0, UseBiasCorrection: biasCorrection));

        // The paper's algorithm in double precision, written out. Each step starts from the optimizer's own float32
        // point x_k (the parameters are float32: after steps of d0 ≈ 1e-6 a double trajectory would drift from any float
        // one by rounding alone), so the check is of the update equations, one step at a time.
        double[] x0 = [0.5, 0.5, 0.5], m = new double[3], v = new double[3], s = new double[3];
        double r = 0, d = d0;
        for (int k = 0; k < 40; k++)
        {
            double[] x = param.Select(p => (double)p).ToArray();
            var g = Gradient(x);
            for (int i = 0; i < 3; i++) grad[i] = (float)g[i];
            double gamma = biasCorrection ? lr * Math.Sqrt(1 - Math.Pow(b2, k + 1)) / (1 - Math.Pow(b1, k + 1)) : lr;
            double dot = 0;
            for (int i = 0; i < 3; i++)
            {
                m[i] = b1 * m[i] + (1 - b1) * d * g[i];
                v[i] = b2 * v[i] + (1 - b2) * d * d * g[i] * g[i];
                s[i] = Math.Sqrt(b2) * s[i] + (1 - Math.Sqrt(b2)) * gamma * d * d * g[i];
                dot += g[i] * (x0[i] - x[i]);
            }
            r = Math.Sqrt(b2) * r + (1 - Math.Sqrt(b2)) * gamma * d * d * dot;
            double dHat = r / s.Sum(Math.Abs);
            double dNext = Math.Max(d, dHat);
            for (int i = 0; i < 3; i++) x[i] -= gamma * d * m[i] / (Math.Sqrt(v[i]) + d * eps);
            d = dNext;

            opt.Step();
            Assert.True(Math.Abs(opt.D - d) <= 1e-5 * d, $"step {k}: d {opt.D} vs the paper's {d}");
            for (int i = 0; i < 3; i++)
                Assert.True(Math.Abs(param[i] - x[i]) <= 1e-6 * Math.Max(1, Math.Abs(x[i])), $"step {k}, x{i}: {param[i]} vs the paper's {x[i]}");
        }
        Assert.True(d > 100 * d0, $"d should grow from d0: {d}");
    }

    // ---- Lion (Chen et al. 2023, Algorithm 2) ----

    [Fact]
    public void Lion_follows_algorithm_2_step_by_step()
    {
        double b1 = 0.9, b2 = 0.99, lr = 0.05, wd = 0.1;
        var param = new float[] { 0.5f, 0.5f, 0.5f };
        var grad = new float[3];
        var opt = new Lion([new ParameterGroup("g", [new OptimizerParameter("x", param, grad)], lr, wd)], new LionOptions(b1, b2));
        double[] x = [0.5, 0.5, 0.5], m = new double[3];
        for (int t = 0; t < 40; t++)
        {
            var g = Gradient(x);
            for (int i = 0; i < 3; i++) grad[i] = (float)g[i];
            for (int i = 0; i < 3; i++)
            {
                double c = b1 * m[i] + (1 - b1) * g[i];
                x[i] -= lr * (Math.Sign(c) + wd * x[i]);
                m[i] = b2 * m[i] + (1 - b2) * g[i];
            }
            opt.Step();
            for (int i = 0; i < 3; i++) Assert.True(Math.Abs(param[i] - x[i]) <= 1e-5, $"step {t}, x{i}: {param[i]} vs the paper's {x[i]}");
        }
        var state = opt.State();
        Assert.Equal(40L, state["g/step"].ToInt64Array()[0]);
        Assert.Equal((float)m[1], state["g/x/exp_avg"].ToFloat32Array()[1], 5);
    }

    // ---- resume ----

    public static IEnumerable<object[]> Optimizers() =>
    [
        ["adamw8bit"], ["prodigy"], ["lion"],
    ];

    private static Optimizer Make(string kind, IReadOnlyList<ParameterGroup> groups) => kind switch
    {
        "adamw8bit" => new AdamW8bit(groups),
        "prodigy" => new Prodigy(groups, new ProdigyOptions(UseBiasCorrection: true)),
        _ => new Lion(groups),
    };

    [Theory]
    [MemberData(nameof(Optimizers))]
    public void State_round_trip_resumes_bit_for_bit(string kind)
    {
        var rng = new Random(11);
        var start = Enumerable.Range(0, 2500).Select(_ => (float)rng.NextDouble()).ToArray();
        (Optimizer Opt, float[] P, float[] G) Fresh()
        {
            var p = (float[])start.Clone();
            var g = new float[p.Length];
            return (Make(kind, [new ParameterGroup("unet", [new OptimizerParameter("w", p, g)], kind == "prodigy" ? 1.0 : 1e-2, 0.01)]), p, g);
        }
        void Grad(float[] p, float[] g) { for (int i = 0; i < p.Length; i++) g[i] = p[i] * (i % 7 - 3) * 0.1f + 0.01f * (i % 5); }

        var (a, pa, ga) = Fresh();
        for (int s = 0; s < 10; s++) { Grad(pa, ga); a.Step(); }

        var (b, pb, gb) = Fresh();
        for (int s = 0; s < 6; s++) { Grad(pb, gb); b.Step(); }
        var saved = b.State();
        var (c, pc, gc) = Fresh();
        pb.CopyTo(pc, 0);
        c.Load(saved);
        for (int s = 6; s < 10; s++) { Grad(pc, gc); c.Step(); }
        Assert.Equal(pa, pc);
    }

    [Fact]
    public void Load_refuses_a_state_without_the_quantized_moments()
    {
        var p = new float[10];
        var opt = new AdamW8bit([new ParameterGroup("g", [new OptimizerParameter("w", p, new float[10])], 1e-3)]);
        var state = new Dictionary<string, CudaDream.Engine.Tensors.Tensor>(opt.State());
        state.Remove("g/w/exp_avg_sq.q8");
        var e = Assert.Throws<CudaDreamException>(() => opt.Load(state));
        Assert.Contains("g/w/exp_avg_sq.q8", e.Message);
    }

    // ---- EMA (diffusers' EMAModel) ----

    [Fact]
    public void Ema_decay_sequence_is_diffusers_formula_for_100_updates()
    {
        // diffusers EMAModel.get_decay (update_after_step 0, use_ema_warmup False):
        //   step = max(0, optimization_step − 1); 0 if step ≤ 0 else min(decay, (1 + step)/(10 + step)).
        // Update 2: 2/11; update 10: 10/19; with decay 0.9 the cap is reached at (1 + k)/(10 + k) ≥ 0.9 ⇔ k ≥ 80 (update 81).
        Assert.Equal(0.0, ExponentialMovingAverage.DecayAt(1, 0.9));
        Assert.Equal(2.0 / 11, ExponentialMovingAverage.DecayAt(2, 0.9), 15);
        Assert.Equal(10.0 / 19, ExponentialMovingAverage.DecayAt(10, 0.9), 15);
        Assert.Equal(0.9, ExponentialMovingAverage.DecayAt(81, 0.9), 15);
        Assert.True(ExponentialMovingAverage.DecayAt(80, 0.9) < 0.9);

        var theta = new float[] { 0f, 1f };
        var ema = new ExponentialMovingAverage([("w", theta.AsMemory())], 0.9);
        double[] shadow = [0, 1];
        for (int n = 1; n <= 100; n++)
        {
            theta[0] = n; theta[1] = (float)Math.Sin(n);
            ema.Update();
            double k = n - 1, decay = k <= 0 ? 0 : Math.Min(0.9, (1 + k) / (10 + k));
            for (int i = 0; i < 2; i++) shadow[i] -= (1 - decay) * (shadow[i] - theta[i]);
            Assert.Equal(decay, ExponentialMovingAverage.DecayAt(n, 0.9), 15);
            Assert.True(Math.Abs(ema.Shadow("w")[0] - shadow[0]) <= 1e-5 * Math.Abs(shadow[0]), $"update {n}: {ema.Shadow("w")[0]} vs {shadow[0]}");
            Assert.True(Math.Abs(ema.Shadow("w")[1] - shadow[1]) <= 1e-5, $"update {n}");
        }
        Assert.Equal(100L, ema.Updates);
        var restored = new ExponentialMovingAverage([("w", theta.AsMemory())], 0.9);
        restored.Load(ema.State(), "test");
        Assert.Equal(ema.Shadow("w").ToArray(), restored.Shadow("w").ToArray());
        Assert.Equal(100L, restored.Updates);
    }
}
