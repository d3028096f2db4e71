using System.Text.Json;
using CudaDream.Diffusion.Schedulers;
using CudaDream.Engine.Formats;
using CudaDream.Engine.Randomness;
using CudaDream.TestSupport;
using Xunit;
using Xunit.Abstractions;

namespace CudaDream.Diffusion.Tests.Schedulers;

/// <summary>
/// Replays torch StableDiffusionPipeline runs (refs/pipeline_&lt;s&gt;.*): the scheduler configured from the fixture
/// model folder's own scheduler_config.json is fed the recorded guided noise predictions and must reproduce every
/// recorded latent. No network is involved.
/// </summary>
public class PipelineReplayTests(ITestOutputHelper output)
{
    public const double Tolerance = 1e-5;

    [Theory]
    [InlineData("ddim", "ddim")]
    [InlineData("ddim_lora", "ddim")]
    [InlineData("pndm", "pndm")]
    [InlineData("euler", "euler")]
    [InlineData("lms", "lms")]
    [InlineData("dpmpp_2m_karras", "dpmpp-2m-karras")]
    [InlineData("euler_ancestral", "euler-a")]
    [InlineData("unipc", "unipc")]
    [InlineData("heun", "heun")]
    public void Replaying_recorded_noise_predictions_reproduces_the_pipeline_latents(string refName, string cliName)
    {
        var config = SchedulerConfig.Load(Fixtures.SdTiny("scheduler/scheduler_config.json"));
        using var refs = SafetensorsFile.Open(Fixtures.SdTiny($"refs/pipeline_{refName}.safetensors"));
        var meta = JsonDocument.Parse(SchedulerConfig.QuoteNonFiniteNumbers(File.ReadAllText(Fixtures.SdTiny($"refs/pipeline_{refName}.json")))).RootElement;
        int steps = meta.GetProperty("call").GetProperty("num_inference_steps").GetInt32();

        var scheduler = SchedulerFactory.Create(cliName, config);
        scheduler.SetTimesteps(steps);
        var timesteps = refs.Get("timesteps").ToFloat32Array();
        Assert.Equal(timesteps, scheduler.Timesteps.Select(t => (float)t).ToArray());
        if (refs.Contains("sigmas"))
            TensorAssert.Close(refs.Get("sigmas").ToFloat32Array(), scheduler.Sigmas!.Select(s => (float)s).ToArray(), 1e-7, "sigmas");
        Assert.Equal((float)meta.GetProperty("init_noise_sigma").GetDouble(), (float)scheduler.InitNoiseSigma);

        var x = refs.Get("initial_latents").ToFloat32Array();
        float sigma0 = (float)scheduler.InitNoiseSigma;
        for (int i = 0; i < x.Length; i++) x[i] *= sigma0;
        TensorAssert.Close(refs.Get("latents_start").ToFloat32Array(), x, 0, "latents_start");

        INoiseSource? noise = refName == "euler_ancestral" ? RecordedNoise.FromStacked(refs.Get("noise")) : null;
        var stepTimesteps = refs.Get("step_timestep").ToFloat32Array();
        var predictions = refs.Get("step_noise_pred");
        var latents = refs.Get("step_latents");
        Assert.Equal(stepTimesteps.Length, scheduler.Timesteps.Count);
        double worst = 0;
        for (int k = 0; k < stepTimesteps.Length; k++)
        {
            double t = scheduler.Timesteps[k];
            Assert.Equal(stepTimesteps[k], (float)t);
            scheduler.Step(SchedulerReferences.Row(predictions, k), t, x, noise);
            double err = TensorAssert.RelativeMaxError(x, SchedulerReferences.Row(latents, k));
            worst = Math.Max(worst, err);
            Assert.True(err <= Tolerance, $"{refName} step {k} (t={t}): latent error {err:E2}");
        }
        TensorAssert.Close(refs.Get("final_latents").ToFloat32Array(), x, Tolerance, "final latents");
        output.WriteLine($"pipeline_{refName}: {stepTimesteps.Length} step calls, worst latent error {worst:E2} (max|a-b|/max|ref|)");
    }
}
