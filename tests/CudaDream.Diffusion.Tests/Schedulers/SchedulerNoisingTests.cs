using CudaDream.Diffusion.Schedulers;
using CudaDream.TestSupport;
using Xunit;
using static CudaDream.Diffusion.Tests.Schedulers.SchedulerReferences;

namespace CudaDream.Diffusion.Tests.Schedulers;

/// <summary>Training noise, v-prediction targets and img2img helpers, against diffusers' DDPMScheduler outputs and formulas.</summary>
public class SchedulerNoisingTests
{
    [Fact]
    public void Ddpm_add_noise_and_velocity_match_diffusers_per_row()
    {
        var s = new DdpmScheduler(SchedulerConfig.StableDiffusion15);
        var x0 = Get("ddpm_train.x0").ToFloat32Array();
        var noise = Get("ddpm_train.noise").ToFloat32Array();
        var timesteps = Get("ddpm_train.timesteps").ReadOnlySpan<int>().ToArray();
        Assert.Equal(new[] { 0, 1, 500, 999 }, timesteps);
        var noisy = new float[x0.Length];
        s.AddNoise(x0, noise, timesteps, noisy);
        TensorAssert.Close(Get("ddpm_train.noisy").ToFloat32Array(), noisy, 1e-6, "noisy");
        var v = new float[x0.Length];
        s.GetVelocity(x0, noise, timesteps, v);
        TensorAssert.Close(Get("ddpm_train.velocity").ToFloat32Array(), v, 1e-6, "velocity");
        var target = new float[x0.Length];
        s.TrainingTarget(x0, noise, timesteps, target);
        Assert.Equal(noise, target); // epsilon prediction: the target is the noise

        var sa = Get("ddpm_train.sqrt_alpha_prod").ToFloat32Array();
        var sb = Get("ddpm_train.sqrt_one_minus_alpha_prod").ToFloat32Array();
        for (int b = 0; b < 4; b++)
        {
            Assert.Equal(sa[b], MathF.Sqrt(s.AlphasCumprod[timesteps[b]]));
            Assert.Equal(sb[b], MathF.Sqrt(1 - s.AlphasCumprod[timesteps[b]]));
        }
        var vpred = new DdpmScheduler(SchedulerConfig.StableDiffusion15 with { PredictionType = "v_prediction" });
        vpred.TrainingTarget(x0, noise, timesteps, target);
        Assert.Equal(v, target);
    }

    [Fact]
    public void Img2img_timesteps_follow_get_timesteps()
    {
        // StableDiffusionImg2ImgPipeline.get_timesteps: init = min(int(n·strength), n), t_start = max(n − init, 0),
        // timesteps[t_start·order:]. DDIM, 10 steps, strength 0.75: init = int(7.5) = 7, t_start = 3.
        var ddim = SchedulerFactory.Create("ddim");
        ddim.SetTimesteps(10);
        var r = ddim.GetImg2ImgTimesteps(0.75);
        Assert.Equal(3, r.StartIndex);
        Assert.Equal(7, r.EffectiveSteps);
        Assert.Equal(new double[] { 601, 501, 401, 301, 201, 101, 1 }, r.Timesteps);
        Assert.Equal(10, ddim.GetImg2ImgTimesteps(1.0).Timesteps.Count);
        Assert.Throws<Engine.CudaDreamException>(() => ddim.GetImg2ImgTimesteps(0.05)); // int(0.5) = 0 steps

        // Heun has order 2: t_start·2 into its doubled list (t0, t1, t1, ...). 10 steps, strength 0.5: t_start = 5.
        var heun = SchedulerFactory.Create("heun");
        heun.SetTimesteps(10);
        var h = heun.GetImg2ImgTimesteps(0.5);
        Assert.Equal(10, h.StartIndex);
        Assert.Equal(heun.Timesteps.Skip(10), h.Timesteps);
        // The tail starts at the second copy of t5 (index 10), whose σ index_for_timestep picks first.
        Assert.Equal(heun.Timesteps[9], h.Timesteps[0]);
        Assert.Equal(h.Timesteps[1], h.Timesteps[2]);
    }

    [Fact]
    public void Add_noise_is_alpha_based_or_sigma_based()
    {
        var x = new float[] { 1f, -2f, 0.5f };
        var n = new float[] { 0.3f, 0.1f, -1f };
        var d = new float[3];

        var ddim = (DiffusionScheduler)SchedulerFactory.Create("ddim");
        ddim.SetTimesteps(10);
        ddim.AddNoise(x, n, 501, d);
        float a = ddim.AlphasCumprod[501];
        for (int i = 0; i < 3; i++) Assert.Equal(MathF.Sqrt(a) * x[i] + MathF.Sqrt(1 - a) * n[i], d[i]);

        var euler = SchedulerFactory.Create("euler");
        euler.SetTimesteps(10);
        double t = euler.Timesteps[3];
        float sigma = (float)euler.Sigmas![3];
        euler.AddNoise(x, n, t, d);
        for (int i = 0; i < 3; i++) Assert.Equal(x[i] + n[i] * sigma, d[i]);

        // Heun, before any step, noises to the second occurrence of a repeated timestep (diffusers' index_for_timestep).
        var heun = SchedulerFactory.Create("heun");
        heun.SetTimesteps(10);
        heun.AddNoise(x, n, heun.Timesteps[3], d);
        Assert.Equal(x[0] + n[0] * (float)heun.Sigmas![4], d[0]);
    }

    [Fact]
    public void Set_timesteps_resets_multistep_state()
    {
        foreach (var name in new[] { "pndm", "lms", "heun", "dpmpp-2m-karras", "unipc" })
        {
            var s = SchedulerFactory.Create(name);
            float[] Run()
            {
                s.SetTimesteps(6);
                var x = Enumerable.Range(0, 16).Select(i => (float)Math.Sin(i)).Select(v => v * (float)s.InitNoiseSigma).ToArray();
                var xin = new float[x.Length];
                foreach (var t in s.Timesteps)
                {
                    s.ScaleModelInput(x, t, xin);
                    s.Step(ToyModel(xin, t), t, x);
                }
                return x;
            }
            Assert.Equal(Run(), Run());
        }
    }

    [Fact]
    public void Stochastic_schedulers_require_a_noise_source()
    {
        foreach (var name in new[] { "ddpm", "euler-a" })
        {
            var s = SchedulerFactory.Create(name);
            s.SetTimesteps(5);
            var x = new float[4];
            Assert.Throws<InvalidOperationException>(() => s.Step(new float[4], s.Timesteps[0], x));
            s.Step(new float[4], s.Timesteps[0], x, new Engine.Randomness.PhiloxNoise(1));
        }
    }
}
