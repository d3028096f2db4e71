using CudaDream.Engine.Training.Optimizers;
using Xunit;

namespace CudaDream.Engine.Tests.Training;

/// <summary>
/// AdamW and SGD against torch.optim's update equations evaluated by hand (double precision, written out below);
/// the optimizers run in float32, so agreement is to float rounding.
/// </summary>
public class OptimizerTests
{
    private static (ParameterGroup Group, float[] Param, float[] Grad) Group(string name, float[] values, double lr, double wd)
    {
        var p = (float[])values.Clone();
        var g = new float[p.Length];
        return (new ParameterGroup(name, [new OptimizerParameter("w", p, g)], lr, wd), p, g);
    }

    [Fact]
    public void AdamW_three_steps_match_the_torch_equations()
    {
        // lr 0.1, betas (0.9, 0.999), eps 1e-8, weight decay 0.01; θ0 = 1.0; gradients 0.5, −0.2, 0.1.
        var (group, p, g) = Group("unet", [1.0f], 0.1, 0.01);
        var opt = new AdamW([group]);

        // Step 1: θ = 1·(1 − 0.1·0.01) = 0.999; m = 0.1·0.5 = 0.05; v = 0.001·0.25 = 0.00025;
        // bc1 = 1 − 0.9 = 0.1, bc2 = 1 − 0.999 = 0.001; step = 0.1/0.1 = 1;
        // denom = √0.00025/√0.001 + 1e-8 = 0.5 + 1e-8; θ = 0.999 − 1·0.05/0.50000001 = 0.899000002
        g[0] = 0.5f; opt.Step();
        Assert.Equal(0.899000002, p[0], 6);

        // Step 2: θ = 0.899000002·0.999 = 0.8981010020; m = 0.9·0.05 + 0.1·(−0.2) = 0.025;
        // v = 0.999·0.00025 + 0.001·0.04 = 0.00028975; bc1 = 1 − 0.81 = 0.19, bc2 = 1 − 0.998001 = 0.001999;
        // step = 0.1/0.19 = 0.5263157895; denom = √0.00028975/√0.001999 + 1e-8 = 0.0170220445/0.0447101778 + 1e-8 = 0.3807196887;
        // θ = 0.8981010020 − 0.5263157895·0.025/0.3807196887 = 0.8981010020 − 0.0345605839 = 0.8635404181
        g[0] = -0.2f; opt.Step();
        Assert.Equal(0.8635404181, p[0], 6);

        // Step 3: θ = 0.8635404181·0.999 = 0.8626768777; m = 0.9·0.025 + 0.1·0.1 = 0.0325;
        // v = 0.999·0.00028975 + 0.001·0.01 = 0.00029946025; bc1 = 1 − 0.729 = 0.271, bc2 = 1 − 0.997002999 = 0.002997001;
        // step = 0.1/0.271 = 0.3690036900; denom = √0.00029946025/√0.002997001 + 1e-8 = 0.0173049198/0.0547448719 + 1e-8 = 0.3161012121;
        // θ = 0.8626768777 − 0.3690036900·0.0325/0.3161012121 = 0.8626768777 − 0.0379391773 = 0.8247377004
        g[0] = 0.1f; opt.Step();
        Assert.Equal(0.8247377004, p[0], 6);

        var state = opt.State();
        Assert.Equal(3L, state["unet/step"].ToInt64Array()[0]);
        Assert.Equal(0.0325f, state["unet/w/exp_avg"].ToFloat32Array()[0], 7);
        Assert.Equal(0.00029946025f, state["unet/w/exp_avg_sq"].ToFloat32Array()[0], 9);
    }

    [Fact]
    public void AdamW_weight_decay_is_decoupled_from_the_moments()
    {
        // With zero gradient the moments stay 0, so the only change is θ·(1 − lr·λ) each step: 2·0.95³ = 1.71475.
        var (group, p, _) = Group("g", [2.0f, -4.0f], 0.1, 0.5);
        var opt = new AdamW([group]);
        for (int i = 0; i < 3; i++) opt.Step();
        Assert.Equal(1.71475f, p[0], 5);
        Assert.Equal(-3.4295f, p[1], 5);

        // With a gradient, the moments are those of the gradient alone (λ never enters m or v, unlike Adam's L2).
        var (a, pa, ga) = Group("a", [3.0f], 0.01, 0.0);
        var (b, pb, gb) = Group("b", [3.0f], 0.01, 0.2);
        var oa = new AdamW([a]); var ob = new AdamW([b]);
        ga[0] = gb[0] = 0.7f;
        oa.Step(); ob.Step();
        Assert.Equal(oa.State()["a/w/exp_avg"].ToFloat32Array(), ob.State()["b/w/exp_avg"].ToFloat32Array());
        Assert.Equal(oa.State()["a/w/exp_avg_sq"].ToFloat32Array(), ob.State()["b/w/exp_avg_sq"].ToFloat32Array());
        // Difference of the two parameters = the decay term lr·λ·θ = 0.01·0.2·3 = 0.006.
        Assert.Equal(0.006f, pa[0] - pb[0], 6);
    }

    [Fact]
    public void Sgd_momentum_three_steps_match_the_torch_equations()
    {
        // lr 0.1, momentum 0.9, dampening 0, weight decay 0.1 (L2: d = g + 0.1·θ); θ0 = 1; gradients 1, −0.5, 0.25.
        var (group, p, g) = Group("g", [1.0f], 0.1, 0.1);
        var opt = new Sgd([group], new SgdOptions(Momentum: 0.9));
        // 1: d = 1 + 0.1·1 = 1.1; b = d = 1.1 (first step copies); θ = 1 − 0.1·1.1 = 0.89
        g[0] = 1f; opt.Step();
        Assert.Equal(0.89, p[0], 6);
        // 2: d = −0.5 + 0.089 = −0.411; b = 0.9·1.1 − 0.411 = 0.579; θ = 0.89 − 0.0579 = 0.8321
        g[0] = -0.5f; opt.Step();
        Assert.Equal(0.8321, p[0], 6);
        // 3: d = 0.25 + 0.08321 = 0.33321; b = 0.9·0.579 + 0.33321 = 0.85431; θ = 0.8321 − 0.085431 = 0.746669
        g[0] = 0.25f; opt.Step();
        Assert.Equal(0.746669, p[0], 6);
        Assert.Equal(0.85431f, opt.State()["g/w/momentum_buffer"].ToFloat32Array()[0], 6);
    }

    [Fact]
    public void Sgd_nesterov_and_dampening()
    {
        // Nesterov, lr 0.1, μ 0.9, no decay; gradients 1, 1: step 1 b = 1, d = 1 + 0.9·1 = 1.9, θ = −0.19;
        // step 2 b = 0.9 + 1 = 1.9, d = 1 + 0.9·1.9 = 2.71, θ = −0.19 − 0.271 = −0.461
        var (group, p, g) = Group("g", [0f], 0.1, 0);
        var opt = new Sgd([group], new SgdOptions(Momentum: 0.9, Nesterov: true));
        g[0] = 1; opt.Step(); Assert.Equal(-0.19f, p[0], 6);
        opt.Step(); Assert.Equal(-0.461f, p[0], 6);

        // Dampening 0.5: step 1 b = d = 1 (no dampening on the first copy); step 2 b = 0.9 + 0.5·1 = 1.4; θ = −0.1 − 0.14
        var (g2, p2, gr2) = Group("g", [0f], 0.1, 0);
        var damp = new Sgd([g2], new SgdOptions(Momentum: 0.9, Dampening: 0.5));
        gr2[0] = 1; damp.Step(); damp.Step();
        Assert.Equal(-0.24f, p2[0], 6);
    }

    [Fact]
    public void Groups_have_their_own_learning_rate_and_weight_decay_and_follow_a_schedule()
    {
        var (unet, pu, gu) = Group("unet_lora", [1f], 1e-4, 0.01);
        var (text, pt, gt) = Group("text_lora", [1f], 5e-5, 0.0);
        var opt = new AdamW([unet, text]);
        opt.SetLearningRateMultiplier(0.5);
        Assert.Equal(5e-5, unet.LearningRate);
        Assert.Equal(2.5e-5, text.LearningRate);
        gu[0] = gt[0] = 1f;
        opt.Step();
        // First AdamW step moves by lr·m̂/(√v̂ + ε) = lr·1/(1 + 1e-8), plus decoupled decay lr·λ·θ for the UNet group.
        Assert.Equal(1 - 5e-5 * 0.01 - 5e-5 / (1 + 1e-8), pu[0], 6);
        Assert.Equal(1 - 2.5e-5 / (1 + 1e-8), pt[0], 6);
        opt.ZeroGrad();
        Assert.Equal(0f, gu[0]);
    }

    [Fact]
    public void State_round_trip_resumes_exactly()
    {
        float[] grads1 = [0.3f, -1.2f, 0.05f], grads2 = [-0.7f, 0.4f, 0.9f], grads3 = [0.1f, 0.1f, -0.3f];
        var (ga, pa, gra) = Group("g", [0.5f, -0.25f, 2f], 0.01, 0.1);
        var a = new AdamW([ga]);
        grads1.CopyTo(gra, 0); a.Step();
        grads2.CopyTo(gra, 0); a.Step();
        var saved = a.State();

        var (gb, pb, grb) = Group("g", pa, 0.01, 0.1);
        var b = new AdamW([gb]);
        b.Load(saved);
        grads3.CopyTo(gra, 0); a.Step();
        grads3.CopyTo(grb, 0); b.Step();
        Assert.Equal(pa, pb);
        Assert.Equal(3L, gb.StepCount);

        var bad = new Dictionary<string, Engine.Tensors.Tensor>(saved);
        bad.Remove("g/w/exp_avg_sq");
        var ex = Assert.Throws<CudaDreamException>(() => b.Load(bad));
        Assert.Contains("g/w/exp_avg_sq", ex.Message);
    }

    [Fact]
    public void Global_norm_clipping_matches_clip_grad_norm()
    {
        // ‖(3, 4, 12)‖ = 13; max 6.5 → coefficient 6.5/(13 + 1e-6) ≈ 0.5 → (1.5, 2, 6)
        float[] a = [3f, 4f], b = [12f];
        var r = GradientClipping.ClipByGlobalNorm([a, b], 6.5);
        Assert.Equal(13.0, r.TotalNorm, 12);
        Assert.True(r.IsFinite);
        Assert.Equal(6.5 / (13 + 1e-6), r.Scale, 15);
        Assert.Equal(1.5f, a[0], 5); Assert.Equal(2f, a[1], 5); Assert.Equal(6f, b[0], 5);

        // Under the limit: untouched.
        float[] c = [0.3f, 0.4f];
        Assert.Equal(0.5, GradientClipping.ClipByGlobalNorm([c], 1.0).TotalNorm, 6);
        Assert.Equal(new[] { 0.3f, 0.4f }, c);

        // Non-finite: reported, gradients left alone.
        float[] d = [1f, float.NaN];
        var nf = GradientClipping.ClipByGlobalNorm([d], 1.0);
        Assert.False(nf.IsFinite);
        Assert.Equal(1f, d[0]);
        float[] e = [float.PositiveInfinity];
        Assert.False(GradientClipping.ClipByGlobalNorm([e], 1.0).IsFinite);
    }

    [Fact]
    public void Gradient_accumulation_averages_micro_steps()
    {
        var acc = new GradientAccumulation(4);
        Assert.False(acc.IsUpdateStep(2));
        Assert.True(acc.IsUpdateStep(3));
        Assert.True(acc.IsUpdateStep(7));
        var sum = new float[2] { 99f, 99f };
        float[][] micro = [[1f, -2f], [3f, 0f], [2f, 2f], [-2f, 4f]];
        for (int i = 0; i < 4; i++) acc.Accumulate(micro[i], sum, first: acc.Position(i) == 0);
        Assert.Equal(new[] { 1f, 1f }, sum); // (1+3+2−2)/4, (−2+0+2+4)/4
        Assert.Throws<CudaDreamException>(() => new GradientAccumulation(0));
    }
}
