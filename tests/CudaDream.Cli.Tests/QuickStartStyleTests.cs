using CudaDream.Diffusion.Images;
using CudaDream.Diffusion.Models;
using CudaDream.Diffusion.Pretraining;
using CudaDream.Diffusion.Sampling;
using CudaDream.TestSupport;
using Xunit;
using Xunit.Abstractions;

namespace CudaDream.Cli.Tests;

/// <summary>
/// [M2]'s second acceptance: the quick start (models/tiny-sd/examples/run.json) teaches sks_pixarstyle the toon look of its
/// instance images while prior preservation keeps the plain look without the token. The statistic is the fraction of dark
/// outline pixels (<see cref="SceneJudge.DarkFraction"/>), on scenes of a seed neither pretraining nor the examples used.
/// </summary>
[Collection("Console")]
public class QuickStartStyleTests(ITestOutputHelper output)
{
    private static string Examples => Path.Combine(Fixtures.RepoRoot, "models", "tiny-sd", "examples");

    private static double MeanDark(Sampler sampler, IEnumerable<string> prompts) =>
        prompts.SelectMany(p => new[] { 1L, 2L }.Select(seed => sampler.Generate(new GenerationRequest
        {
            Prompt = p, Steps = 20, CfgScale = 4, Width = 64, Height = 64, Seed = seed, Scheduler = "ddim",
        }).Images[0].Image)).Average(SceneJudge.DarkFraction);

    /// <summary>Trains the quick start (optionally edited), then the dark-outline fractions: instance images, base model, LoRA with and without the token.</summary>
    private (double Instance, double Base, double Token, double Plain) Measure(string config, string runDir)
    {
        var (code, _, stderr) = CliRunner.Run("train", "--config", config, "--output-dir", runDir, "--sample-every-n-steps", "0");
        Assert.True(code == 0, stderr);
        var lora = Path.Combine(runDir, "sks_pixarstyle.safetensors");
        Assert.True(File.Exists(lora));
        Assert.True(File.Exists(Path.Combine(runDir, "loss.png")));

        double instance = Directory.GetFiles(Path.Combine(Examples, "pixar-style"), "*.png").Average(f => SceneJudge.DarkFraction(ImageLoader.Load(f)));
        var plain = Enumerable.Range(0, 6).Select(i => ShapeScenes.Draw(2024, i, 64).Caption).ToList();
        var withToken = plain.Select(p => p + ", sks_pixarstyle style").ToList();
        var model = ModelFolder.Open(Fixtures.EmbeddedModel);
        double baseDark;
        using (var baseSampler = Sampler.Create(model, new SamplerOptions { Engine = SamplerEngine.CudaDream, KeepSessionsLoaded = true }))
            baseDark = MeanDark(baseSampler, plain);
        using var trained = Sampler.Create(model, new SamplerOptions { Engine = SamplerEngine.CudaDream, KeepSessionsLoaded = true, Loras = [new LoraSource.File(lora)] });
        var r = (instance, baseDark, MeanDark(trained, withToken), MeanDark(trained, plain));
        output.WriteLine($"dark outline fraction: instance images {r.instance:P1}, base model {r.baseDark:P1}, LoRA with token {r.Item3:P1}, LoRA without token {r.Item4:P1}; " +
            $"with the token {(r.Item3 - r.baseDark) / (r.instance - r.baseDark):P0} of the way, without {(r.Item4 - r.baseDark) / (r.instance - r.baseDark):P0}");
        return r;
    }

    [Fact]
    public void The_quick_start_teaches_the_token_the_style_and_keeps_the_plain_look_without_it()
    {
        using var dir = Fixtures.TempDir();
        var (instance, baseDark, tokenDark, plainDark) = Measure(Path.Combine(Examples, "run.json"), dir.File("run"));
        double gap = instance - baseDark;
        Assert.True(gap > 0.03, $"the instance images ({instance:P1}) are not darker than the base model's samples ({baseDark:P1})");
        Assert.True(tokenDark - baseDark >= 0.5 * gap, $"with the token the style moved {(tokenDark - baseDark) / gap:P0} of the way to the instance images (want ≥ 50%)");
        Assert.True(Math.Abs(plainDark - baseDark) <= 0.2 * gap, $"without the token the samples moved {(plainDark - baseDark) / gap:P0} of the way (want within 20%)");
    }

    /// <summary>The same run without prior preservation (num_class_images_per 0): the token still brings the style; how far the plain look drifts is reported.</summary>
    [Fact]
    [Trait("Category", "Slow")]
    public void Without_prior_preservation_the_token_still_learns_the_style()
    {
        using var dir = Fixtures.TempDir();
        // The quick start's settings with prior preservation off, its relative paths made absolute so the copy can live in the temp folder.
        var json = File.ReadAllText(Path.Combine(Examples, "run.json"))
            .Replace("\"num_class_images_per\": 8", "\"num_class_images_per\": 0")
            .Replace("\"model\": \"..\"", $"\"model\": {System.Text.Json.JsonSerializer.Serialize(Fixtures.EmbeddedModel)}")
            .Replace("\"instance_data_dir\": \"pixar-style\"", $"\"instance_data_dir\": {System.Text.Json.JsonSerializer.Serialize(Path.Combine(Examples, "pixar-style"))}");
        Assert.Contains("\"num_class_images_per\": 0", json);
        Assert.DoesNotContain("\"model\": \"..\"", json);
        var config = dir.File("no-prior.json");
        File.WriteAllText(config, json);
        var (instance, baseDark, tokenDark, _) = Measure(config, dir.File("run"));
        Assert.True(tokenDark - baseDark >= 0.5 * (instance - baseDark));
    }
}
