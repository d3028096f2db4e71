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

    [Fact]
    public void The_quick_start_teaches_the_token_the_style_and_keeps_the_plain_look_without_it()
    {
        using var dir = Fixtures.TempDir();
        var (code, _, stderr) = CliRunner.Run("train", "--config", Path.Combine(Examples, "run.json"), "--output-dir", dir.File("run"), "--sample-every-n-steps", "0");
        Assert.True(code == 0, stderr);
        var lora = dir.File(Path.Combine("run", "sks_pixarstyle.safetensors"));
        Assert.True(File.Exists(lora));
        Assert.True(File.Exists(dir.File(Path.Combine("run", "loss.png"))));

        double instance = Directory.GetFiles(Path.Combine(Examples, "pixar-style"), "*.png").Average(f => SceneJudge.DarkFraction(ImageLoader.Load(f)));
        var plain = Enumerable.Range(0, 6).Select(i => ShapeScenes.Draw(2024, i, 64).Caption).ToList();
        var withToken = plain.Select(p => "sks_pixarstyle style, " + p).ToList();
        var model = ModelFolder.Open(Fixtures.EmbeddedModel);
        double baseDark;
        using (var baseSampler = Sampler.Create(model, new SamplerOptions { Engine = SamplerEngine.CudaDream, KeepSessionsLoaded = true }))
            baseDark = MeanDark(baseSampler, plain);
        using var trained = Sampler.Create(model, new SamplerOptions { Engine = SamplerEngine.CudaDream, KeepSessionsLoaded = true, Loras = [new LoraSource.File(lora)] });
        double tokenDark = MeanDark(trained, withToken), plainDark = MeanDark(trained, plain);
        double gap = instance - baseDark;
        output.WriteLine($"dark outline fraction: instance images {instance:P1}, base model {baseDark:P1}, LoRA with token {tokenDark:P1}, LoRA without token {plainDark:P1}");
        Assert.True(gap > 0.03, $"the instance images ({instance:P1}) are not darker than the base model's samples ({baseDark:P1})");
        Assert.True(tokenDark - baseDark >= 0.5 * gap, $"with the token the style moved {(tokenDark - baseDark) / gap:P0} of the way to the instance images (want ≥ 50%)");
        Assert.True(Math.Abs(plainDark - baseDark) <= 0.2 * gap, $"without the token the samples moved {(plainDark - baseDark) / gap:P0} of the way (want within 20%)");
    }
}
