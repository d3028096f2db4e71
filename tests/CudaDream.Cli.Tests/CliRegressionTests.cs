using CudaDream.TestSupport;
using Xunit;

namespace CudaDream.Cli.Tests;

/// <summary>Regressions of the CLI verbs found by probing them with settings and paths the first tests did not use.</summary>
[Collection("Console")]
public class CliRegressionTests
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

    /// <summary>
    /// A run started with relative --model/--output-dir resumes however its folder is named later: by the absolute path,
    /// or through the config.json it wrote, from another working directory. Flag paths were kept relative (so the
    /// written config.json pointed elsewhere when read) and the resume check compared output_dir's spelling.
    /// </summary>
    [Fact]
    public void RelativeFlagPathsResumeFromAnywhere()
    {
        using var dir = Fixtures.TempDir();
        var elsewhere = Directory.CreateDirectory(dir.File("elsewhere")).FullName;
        var outDir = dir.File("out");
        string[] Run(string cwd, params string[] args)
        {
            var previous = Environment.CurrentDirectory;
            Environment.CurrentDirectory = cwd;
            try
            {
                var (code, stdout, stderr) = CliRunner.Run(args);
                Assert.True(code == 0, stderr);
                return stdout.Split('\n');
            }
            finally { Environment.CurrentDirectory = previous; }
        }
        string[] common = ["--sample-engine", "cudadream", "--n-save-sample", "0", "--checkpoint-every-n-steps", "1", "--instance-data-dir", Concepts("teal-rings")];
        Run(dir.FullName, ["train", "--model", Path.GetRelativePath(dir.FullName, Fixtures.SdTiny()), "--output-dir", "out", "--resolution", "64", "--max-train-steps", "2", .. common]);

        var byAbsolutePath = Run(elsewhere, ["train", "--model", Fixtures.SdTiny(), "--output-dir", outDir, "--resolution", "64", "--max-train-steps", "3", "--resume", .. common]);
        Assert.Contains(byAbsolutePath, l => l.StartsWith($"resumed from {Path.Combine(outDir, "checkpoints", "step-000002")} at update 2", StringComparison.Ordinal));

        var byConfigFile = Run(elsewhere, "train", "--config", Path.Combine(outDir, "config.json"), "--max-train-steps", "4", "--resume");
        Assert.Contains(byConfigFile, l => l.StartsWith($"resumed from {Path.Combine(outDir, "checkpoints", "step-000003")} at update 3", StringComparison.Ordinal));
        Assert.Equal(5, File.ReadAllLines(Path.Combine(outDir, "loss.csv")).Length);
    }

    /// <summary>An output_dir that is a file is a one-line configuration error (it was an internal IOException).</summary>
    [Fact]
    public void OutputDirThatIsAFileIsAConfigurationError()
    {
        using var dir = Fixtures.TempDir();
        File.WriteAllText(dir.File("file"), "x");
        var (code, _, stderr) = CliRunner.Run(Args(dir.File("file")));
        Assert.Equal(1, code);
        Assert.Equal($"error: output_dir: '{dir.File("file")}' is a file, not a folder", stderr.Trim());
    }

    /// <summary>export --format ldm to a folder, and graph run --out to a folder, end with one line naming the path.</summary>
    [Fact]
    public void FileOutputsGivenAFolderAreOneLineErrors()
    {
        using var dir = Fixtures.TempDir();
        var model = dir.File("model");
        Assert.Equal(0, CliRunner.Run("import", Fixtures.SdTiny("checkpoint.safetensors"), "--out", model, "--config", Fixtures.SdTiny("configs"), "--tokenizer", Fixtures.SdTiny("tokenizer")).Code);
        var (code, _, stderr) = CliRunner.Run("export", "--model", model, "--format", "ldm", "--out", dir.FullName);
        Assert.Equal(1, code);
        Assert.Equal($"error: {dir.FullName}: is a folder; give a file name", stderr.Trim().Split('\n')[^1].TrimEnd('\r'));
        (code, _, stderr) = CliRunner.Run("graph", "run", "--model", Fixtures.SdTiny("text_encoder/model.onnx"), "--inputs", Fixtures.SdTiny("refs/text_encoder.safetensors"), "--out", dir.FullName);
        Assert.Equal(1, code);
        Assert.Equal($"error: {dir.FullName}: is a folder; give a file name", stderr.Trim());
    }

    /// <summary>A model folder without a VAE encoder cannot train (latents): one line before any work (it was an internal error after the class images).</summary>
    [Fact]
    public void TrainingWithoutAVaeEncoderStopsBeforeAnyWork()
    {
        using var dir = Fixtures.TempDir();
        var model = dir.File("model");
        Assert.Equal(0, CliRunner.Run("import", Fixtures.SdTiny("checkpoint.safetensors"), "--out", model, "--config", Fixtures.SdTiny("configs"), "--tokenizer", Fixtures.SdTiny("tokenizer")).Code);
        Directory.Delete(Path.Combine(model, "vae_encoder"), recursive: true);
        var index = Path.Combine(model, "model_index.json");
        var json = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(index))!.AsObject();
        json.Remove("vae_encoder");
        File.WriteAllText(index, json.ToJsonString());
        var outDir = dir.File("out");
        var (code, _, stderr) = CliRunner.Run(Args(outDir, "--model", model));
        var line = Assert.Single(Problems(code, stderr, outDir));
        Assert.Equal($"error: {model}: training (the images' latents) needs vae_encoder/model.onnx, which this model folder does not have", line);
    }
}
