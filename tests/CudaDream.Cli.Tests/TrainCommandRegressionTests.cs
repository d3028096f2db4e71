using CudaDream.TestSupport;
using Xunit;

namespace CudaDream.Cli.Tests;

/// <summary>Regressions of `cudadream train` found by probing it with settings the first tests did not use.</summary>
[Collection("Console")]
public class TrainCommandRegressionTests
{
    private static string Concepts(string name) => Path.Combine(Fixtures.RepoRoot, "models", "tiny-sd", "concepts", name);

    private static string[] Args(string outDir, params string[] extra) =>
        new[]
        {
            "train", "--model", Fixtures.SdTiny(), "--output-dir", outDir, "--resolution", "64", "--max-train-steps", "1", "--sample-engine", "cudadream",
            "--instance-data-dir", Concepts("orange-tiles"), "--class-prompt", "a pattern", "--num-class-images-per", "1", "--class-infer-steps", "1",
        }.Concat(extra).ToArray();

    private static string[] Problems(int code, string stderr, string outDir)
    {
        Assert.Equal(1, code);
        var lines = stderr.Trim().Split('\n').Select(l => l.TrimEnd('\r')).ToArray();
        Assert.All(lines, l => Assert.StartsWith("error: ", l));
        // Found before anything was generated, cached or written.
        Assert.False(Directory.Exists(outDir), $"{outDir} was created");
        return lines;
    }

    /// <summary>
    /// Settings that only the model can judge (sizes its UNet cannot take, CLIP skip beyond its layers) are errors
    /// listed together before class images are generated, as the other invalid values are; they used to surface
    /// after class images and caching, or (sample_resolution) at the first sample grid, mid-training.
    /// </summary>
    [Fact]
    public void ModelDependentSettingsAreCheckedBeforeAnyWork()
    {
        using var dir = Fixtures.TempDir();
        var outDir = dir.File("out");
        // The torch-exported fixture UNet upsamples by a fixed factor after 2 downsamplers: sides must be multiples of 32.
        var (code, _, stderr) = CliRunner.Run(Args(outDir, "--resolution", "64x40", "--sample-resolution", "48", "--clip-skip", "4"));
        var lines = Problems(code, stderr, outDir);
        Assert.Equal(3, lines.Length);
        Assert.StartsWith("error: resolution 64x40: this model needs sides that are multiples of 32", lines[0]);
        Assert.StartsWith("error: sample_resolution 48x48: this model needs sides that are multiples of 32", lines[1]);
        Assert.Contains("this text encoder has 3 layers", lines[2]);
    }

    [Theory]
    [InlineData("--lora-targets", "*.no_such_module", "lora_targets *.no_such_module match no module")]
    [InlineData("--train-layers", "*.no_such_weight", "train_layers *.no_such_weight match no UNet weight")]
    [InlineData("--lr-scheduler", "polynomial", "learning_rate 1E-08 must be above")]
    public void SettingsThatSelectNothingStopBeforeAnyWork(string flag, string value, string message)
    {
        using var dir = Fixtures.TempDir();
        var outDir = dir.File("out");
        var (code, _, stderr) = CliRunner.Run(Args(outDir, flag, value, "--learning-rate", flag == "--lr-scheduler" ? "1e-8" : "1e-4"));
        var lines = Problems(code, stderr, outDir);
        Assert.Single(lines);
        Assert.Contains(message, lines[0]);
    }
}
