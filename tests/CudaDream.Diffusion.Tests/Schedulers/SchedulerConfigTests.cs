using CudaDream.Diffusion.Schedulers;
using CudaDream.Engine;
using CudaDream.TestSupport;
using Xunit;

namespace CudaDream.Diffusion.Tests.Schedulers;

public class SchedulerConfigTests
{
    [Fact]
    public void Reads_the_sd15_scheduler_config_of_the_fixture_folder()
    {
        var c = SchedulerConfig.Load(Fixtures.SdTiny("scheduler/scheduler_config.json"));
        Assert.Equal(SchedulerConfig.StableDiffusion15 with { SourcePath = c.SourcePath }, c with { TrainedBetas = null });
        Assert.Null(c.TrainedBetas);
        Assert.Null(c.TimestepSpacing); // SD 1.5's file has none: each class takes its own default
        Assert.IsType<PndmScheduler>(SchedulerFactory.FromConfig(c));
    }

    [Fact]
    public void Missing_keys_take_each_class_default_as_from_config_does()
    {
        var c = SchedulerConfig.StableDiffusion15;
        Assert.Equal("leading", ((DiffusionScheduler)SchedulerFactory.Create("ddim", c)).TimestepSpacing);
        Assert.Equal("linspace", ((DiffusionScheduler)SchedulerFactory.Create("euler", c)).TimestepSpacing);
        var trailing = c with { TimestepSpacing = "trailing" };
        var ddim = SchedulerFactory.Create("ddim", trailing);
        ddim.SetTimesteps(10);
        // diffusers trailing: round(arange(1000, 0, -100)) - 1
        Assert.Equal(new double[] { 999, 899, 799, 699, 599, 499, 399, 299, 199, 99 }, ddim.Timesteps);
    }

    [Fact]
    public void Unknown_keys_are_ignored_and_python_infinity_is_read()
    {
        var c = SchedulerConfig.Parse("""
            {"_class_name": "DPMSolverMultistepScheduler", "_diffusers_version": "0.21.4", "lambda_min_clipped": -Infinity,
             "some_future_key": [1, 2, {"x": "Infinity"}], "variance_type": null, "trained_betas": null, "solver_order": 2}
            """);
        Assert.Equal(double.NegativeInfinity, c.LambdaMinClipped);
        Assert.Null(c.VarianceType);
        Assert.Equal(2, c.SolverOrder);
        Assert.IsType<DpmSolverMultistepScheduler>(SchedulerFactory.FromConfig(c));
    }

    [Fact]
    public void Trained_betas_replace_the_schedule()
    {
        var betas = Enumerable.Range(0, 10).Select(i => 0.01 + 0.01 * i).ToArray();
        var json = $$"""{"num_train_timesteps": 10, "trained_betas": [{{string.Join(", ", betas.Select(b => b.ToString(System.Globalization.CultureInfo.InvariantCulture)))}}]}""";
        var s = new DdpmScheduler(SchedulerConfig.Parse(json));
        Assert.Equal(betas.Select(b => (float)b), s.Betas);
        // ᾱ_1 = (1 − 0.01)(1 − 0.02) = 0.9702
        Assert.Equal(0.9702f, s.AlphasCumprod[1], 6);
    }

    [Theory]
    [InlineData("{not json", "not valid JSON")]
    [InlineData("[1, 2]", "not a JSON object")]
    [InlineData("""{"num_train_timesteps": -5}""", "num_train_timesteps")]
    [InlineData("""{"num_train_timesteps": 10.5}""", "not an integer")]
    [InlineData("""{"beta_start": 2}""", "beta_start")]
    [InlineData("""{"beta_schedule": "quadratic"}""", "beta_schedule")]
    [InlineData("""{"prediction_type": 3}""", "prediction_type")]
    [InlineData("""{"timestep_spacing": "sideways"}""", "timestep_spacing")]
    [InlineData("""{"clip_sample": "yes"}""", "clip_sample")]
    [InlineData("""{"num_train_timesteps": 3, "trained_betas": [0.1, 0.2]}""", "trained_betas")]
    [InlineData("""{"trained_betas": [0.1, 1.5]}""", "trained_betas")]
    public void Bad_values_are_one_line_errors_naming_the_file_and_key(string json, string expected)
    {
        var ex = Assert.Throws<InvalidFileException>(() => SchedulerConfig.Parse(json, "model/scheduler/scheduler_config.json"));
        Assert.StartsWith("model/scheduler/scheduler_config.json: ", ex.Message);
        Assert.Contains(expected, ex.Message);
        Assert.DoesNotContain('\n', ex.Message);
    }

    [Fact]
    public void A_missing_file_and_unsupported_options_are_clear_errors()
    {
        using var dir = Fixtures.TempDir();
        Assert.Throws<InvalidFileException>(() => SchedulerConfig.Load(dir.File("nope.json")));
        var path = dir.File("scheduler_config.json");
        File.WriteAllText(path, """{"_class_name": "DDIMScheduler", "thresholding": true}""");
        var ex = Assert.Throws<InvalidFileException>(() => SchedulerFactory.FromConfig(SchedulerConfig.Load(path)));
        Assert.StartsWith(path, ex.Message);
        File.WriteAllText(path, """{"_class_name": "KarrasVeScheduler"}""");
        Assert.Throws<InvalidFileException>(() => SchedulerFactory.FromConfig(SchedulerConfig.Load(path)));
        Assert.Throws<CudaDreamException>(() => SchedulerFactory.Create("k_dpm_fast"));
        Assert.Throws<CudaDreamException>(() => SchedulerFactory.Create("ddim").SetTimesteps(0));
        Assert.Throws<CudaDreamException>(() => SchedulerFactory.Create("ddim").SetTimesteps(1001));
    }

    [Fact]
    public void Every_cli_name_creates_its_scheduler()
    {
        foreach (var name in SchedulerFactory.Names)
        {
            var s = SchedulerFactory.Create(name);
            Assert.Equal(name, s.Name);
            s.SetTimesteps(20);
            Assert.NotEmpty(s.Timesteps);
        }
    }
}
