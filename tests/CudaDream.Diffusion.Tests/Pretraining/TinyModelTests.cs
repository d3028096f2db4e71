using CudaDream.Diffusion.Models;
using CudaDream.Diffusion.Pretraining;
using CudaDream.Diffusion.Sampling;
using CudaDream.TestSupport;
using Xunit;
using Xunit.Abstractions;

namespace CudaDream.Diffusion.Tests.Pretraining;

/// <summary>
/// [M2]'s first acceptance: the embedded model (models/tiny-sd, pretrained by pretrain-tiny) draws what a prompt of its
/// vocabulary names — judged by <see cref="SceneJudge"/>'s pixel test on (prompt, seed) pairs it was not trained on
/// (scenes of another seed) — and the same test fails on the random-weight fixture, so the test can fail.
/// </summary>
public class TinyModelTests(ITestOutputHelper output)
{

    /// <summary>Twelve captions of scenes drawn with a seed the pretraining did not use, each at two sampling seeds.</summary>
    public static IEnumerable<(Scene Scene, long Seed)> Pairs() =>
        Enumerable.Range(0, 12).Select(i => ShapeScenes.Draw(777, i, 64)).SelectMany(s => new[] { (s, 1L), (s, 2L) });

    /// <summary>Fraction of the pairs whose sample reads as its caption.</summary>
    public static double PassRate(string model, Action<string> log)
    {
        using var sampler = Sampler.Create(ModelFolder.Open(model), new SamplerOptions { Engine = SamplerEngine.CudaDream, KeepSessionsLoaded = true });
        int pass = 0, n = 0;
        foreach (var (scene, seed) in Pairs())
        {
            var image = sampler.Generate(new GenerationRequest { Prompt = scene.Caption, Steps = 20, CfgScale = 4, Width = 64, Height = 64, Seed = seed, Scheduler = "ddim" }).Images[0].Image;
            var reading = SceneJudge.Read(image, scene.Colour, scene.Background);
            n++;
            if (reading.Matches) pass++;
            log($"{(reading.Matches ? "pass" : "FAIL")}  seed {seed}  \"{scene.Caption}\": read {reading.Shape?.Name ?? "nothing"} on {reading.Background.Name}, shape {reading.ShapeFraction:P0}");
        }
        return (double)pass / n;
    }

    [Fact]
    public void The_embedded_model_draws_the_colours_and_backgrounds_its_prompts_name()
    {
        double rate = PassRate(Fixtures.EmbeddedModel, output.WriteLine);
        output.WriteLine($"pass rate {rate:P0}");
        Assert.True(rate >= 0.8, $"only {rate:P0} of the (prompt, seed) pairs drew the named colours");
    }

    [Fact]
    public void The_same_pixel_test_fails_on_the_random_weight_fixture()
    {
        double rate = PassRate(Fixtures.SdTiny(), output.WriteLine);
        output.WriteLine($"pass rate {rate:P0}");
        Assert.True(rate < 0.8, $"the random-weight model passed {rate:P0}: the test cannot tell drawing from noise");
    }
}
