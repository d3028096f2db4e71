using CudaDream.Diffusion.Schedulers;
using CudaDream.Engine.Randomness;
using CudaDream.TestSupport;
using Xunit;
using Xunit.Abstractions;
using static CudaDream.Diffusion.Tests.Schedulers.SchedulerReferences;

namespace CudaDream.Diffusion.Tests.Schedulers;

/// <summary>
/// Closed-loop scheduler runs against diffusers 0.21.4 (refs/schedulers.*): SD 1.5 config, 10 and 25 steps,
/// the toy model e = 0.1·x_in·t/1000 + 0.05·cos(t/100); torch's step noise replayed where a scheduler draws it.
/// </summary>
public class SchedulerTrajectoryTests(ITestOutputHelper output)
{
    public const double Tolerance = 1e-5;

    public static TheoryData<string, int> Cases()
    {
        var d = new TheoryData<string, int>();
        foreach (var s in new[] { "ddim", "pndm", "euler", "lms", "dpmpp_2m_karras", "euler_ancestral", "unipc", "heun", "ddpm" })
            foreach (var n in new[] { 10, 25 }) d.Add(s, n);
        return d;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Trajectory_matches_diffusers(string refName, int steps)
    {
        string key = $"{refName}.n{steps}";
        string prefix = $"traj.{key}.";
        var entry = Entry(key);
        var scheduler = SchedulerFactory.Create(CliName(refName), SchedulerConfig.StableDiffusion15);
        scheduler.SetTimesteps(steps);

        // Timesteps exactly (int64 or float32 as the scheduler stores them).
        var expectedTimesteps = entry.GetProperty("timesteps").EnumerateArray().Select(e => e.GetDouble()).ToArray();
        bool floatTimesteps = entry.GetProperty("timesteps_dtype").GetString() == "float32";
        Assert.Equal(expectedTimesteps.Length, scheduler.Timesteps.Count);
        for (int i = 0; i < expectedTimesteps.Length; i++)
            Assert.Equal(floatTimesteps ? (float)expectedTimesteps[i] : expectedTimesteps[i], floatTimesteps ? (float)scheduler.Timesteps[i] : scheduler.Timesteps[i]);

        if (Has(prefix + "sigmas"))
        {
            var sig = Get(prefix + "sigmas").ToFloat32Array();
            Assert.NotNull(scheduler.Sigmas);
            Assert.Equal(sig.Length, scheduler.Sigmas!.Count);
            TensorAssert.Close(sig, scheduler.Sigmas.Select(s => (float)s).ToArray(), 1e-7, "sigmas");
        }
        Assert.Equal((float)entry.GetProperty("init_noise_sigma").GetDouble(), (float)scheduler.InitNoiseSigma);
        Assert.Equal(entry.GetProperty("order").GetInt32(), scheduler.Order == 2 ? 2 : 1);

        var x = Get("sample").ToFloat32Array();
        float initSigma = (float)scheduler.InitNoiseSigma;
        for (int i = 0; i < x.Length; i++) x[i] *= initSigma;
        TensorAssert.Close(Get(prefix + "sample_start").ToFloat32Array(), x, 0, "sample_start");

        INoiseSource? noise = Has(prefix + "noise") ? RecordedNoise.FromStacked(Get(prefix + "noise")) : null;
        var stepTimesteps = Get(prefix + "step_timestep").ToFloat32Array();
        Assert.Equal(stepTimesteps.Length, scheduler.Timesteps.Count);
        double worst = 0, worstInput = 0, worstOutput = 0;
        var xin = new float[x.Length];
        for (int k = 0; k < scheduler.Timesteps.Count; k++)
        {
            double t = scheduler.Timesteps[k];
            Assert.Equal(stepTimesteps[k], (float)t);
            scheduler.ScaleModelInput(x, t, xin);
            if (Has(prefix + "model_input"))
            {
                double ei = TensorAssert.RelativeMaxError(xin, Row(Get(prefix + "model_input"), k));
                worstInput = Math.Max(worstInput, ei);
                Assert.True(ei <= Tolerance, $"{key} step {k} (t={t}): model input error {ei:E2}");
            }
            var e = ToyModel(xin, t);
            double eo = TensorAssert.RelativeMaxError(e, Row(Get(prefix + "model_output"), k));
            worstOutput = Math.Max(worstOutput, eo);
            scheduler.Step(e, t, x, noise);
            double err = TensorAssert.RelativeMaxError(x, Row(Get(prefix + "trajectory"), k));
            worst = Math.Max(worst, err);
            Assert.True(err <= Tolerance, $"{key} step {k} (t={t}): trajectory error {err:E2} > {Tolerance:E0}");
        }
        if (noise is RecordedNoise rec) Assert.Equal(entry.GetProperty("noise_used").GetBoolean() ? rec.Count : 0, rec.Draws);
        output.WriteLine($"{key}: worst trajectory error {worst:E2}, model input {worstInput:E2}, model output {worstOutput:E2} (max|a-b|/max|ref|)");
    }

    [Fact]
    public void Betas_and_alphas_cumprod_equal_torch()
    {
        var s = new DdpmScheduler(SchedulerConfig.StableDiffusion15);
        var betas = Get("sd15.betas").ToFloat32Array();
        var cum = Get("sd15.alphas_cumprod").ToFloat32Array();
        int betaMismatch = betas.Where((b, i) => b != s.Betas[i]).Count();
        int cumMismatch = cum.Where((c, i) => c != s.AlphasCumprod[i]).Count();
        output.WriteLine($"bitwise mismatches: betas {betaMismatch}, alphas_cumprod {cumMismatch}; rel err betas {TensorAssert.RelativeMaxError(s.Betas, betas):E2}, cumprod {TensorAssert.RelativeMaxError(s.AlphasCumprod, cum):E2}");
        Assert.Equal(0, betaMismatch);
        Assert.Equal(0, cumMismatch);
    }
}
