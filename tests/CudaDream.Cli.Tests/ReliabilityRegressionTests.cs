using CudaDream.Engine.Formats;
using CudaDream.Engine.Tensors;
using CudaDream.TestSupport;
using Xunit;
using Xunit.Abstractions;

namespace CudaDream.Cli.Tests;

/// <summary>[R1] The wrong behaviours a hostile new user found, each as a regression test, with their siblings.</summary>
[Collection("Console")]
public sealed class ReliabilityRegressionTests(ITestOutputHelper output) : IDisposable
{
    private readonly TempDir _dir = Fixtures.TempDir();

    public void Dispose() => _dir.Dispose();

    private static string[] Train(string outDir, string instanceDir, int steps, params string[] extra) =>
    [
        "train", "--model", Fixtures.SdTiny(), "--output-dir", outDir, "--resolution", "64", "--max-train-steps", steps.ToString(), "--seed", "5",
        "--checkpoint-every-n-steps", "2", "--sample-engine", "cudadream", "--instance-data-dir", instanceDir, "--instance-prompt", "[filewords]",
        "--instance-token", "zwx", "--n-save-sample", "0", .. extra,
    ];

    /// <summary>A copy of an example concept, so a test may write into (or next to) it.</summary>
    private string InstanceCopy(string name = "images")
    {
        var dir = _dir.File(name);
        Directory.CreateDirectory(dir);
        foreach (var f in Directory.GetFiles(InterruptTests.Concepts("teal-rings"))) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        return dir;
    }

    private static void AssertOneErrorLine(int code, string stderr, string contains)
    {
        Assert.Equal(1, code);
        var lines = stderr.Trim().Split('\n');
        Assert.True(lines.Length == 1, stderr);
        Assert.StartsWith("error: ", lines[0]);
        Assert.DoesNotContain("internal error", lines[0]);
        Assert.Contains(contains, lines[0]);
    }

    [Fact]
    public void Output_dir_equal_to_or_inside_an_instance_folder_is_refused_before_anything_is_written()
    {
        var images = InstanceCopy();
        var before = Directory.GetFileSystemEntries(images).Order().ToArray();
        var (code, _, stderr) = CliRunner.Run(Train(images, images, 1));
        AssertOneErrorLine(code, stderr, "is the instance_data_dir of concept 0");
        Assert.Equal(before, Directory.GetFileSystemEntries(images).Order().ToArray());

        (code, _, stderr) = CliRunner.Run(Train(Path.Combine(images, "run"), images, 1));
        AssertOneErrorLine(code, stderr, "is inside the instance_data_dir of concept 0");
        Assert.False(Directory.Exists(Path.Combine(images, "run")));

        // The same folder spelled through a symbolic link.
        var link = _dir.File("link");
        Directory.CreateSymbolicLink(link, images);
        (code, _, stderr) = CliRunner.Run(Train(link + "/", images, 1));
        AssertOneErrorLine(code, stderr, "instance_data_dir of concept 0");

        // Sibling: a class folder, and instance images kept inside the output folder.
        (code, _, stderr) = CliRunner.Run(Train(_dir.File("classes"), images, 1, "--class-data-dir", _dir.File("classes"), "--class-prompt", "rings", "--num-class-images-per", "1"));
        AssertOneErrorLine(code, stderr, "is the class_data_dir of concept 0");
        (code, _, stderr) = CliRunner.Run(Train(_dir.FullName, images, 1));
        AssertOneErrorLine(code, stderr, "lies inside output_dir");
    }

    [Fact]
    public void Rerunning_into_a_finished_output_dir_needs_resume_or_overwrite()
    {
        var images = InstanceCopy();
        var run = _dir.File("run");
        var (code, _, stderr) = CliRunner.Run(Train(run, images, 2));
        Assert.True(code == 0, stderr);
        var lora = File.ReadAllBytes(Path.Combine(run, "lora.safetensors"));

        (code, _, stderr) = CliRunner.Run(Train(run, images, 2, "--learning-rate", "1e-2"));
        AssertOneErrorLine(code, stderr, "holds an earlier run (lora.safetensors, checkpoints/step-000002)");
        Assert.Equal(lora, File.ReadAllBytes(Path.Combine(run, "lora.safetensors")));

        (code, _, stderr) = CliRunner.Run(Train(run, images, 2, "--resume", "--overwrite"));
        AssertOneErrorLine(code, stderr, "resume, overwrite: choose one");

        // --resume of a finished run changes nothing; --overwrite starts afresh (other settings allowed).
        (code, _, stderr) = CliRunner.Run(Train(run, images, 2, "--resume"));
        Assert.True(code == 0, stderr);
        Assert.Equal(lora, File.ReadAllBytes(Path.Combine(run, "lora.safetensors")));
        string stdout;
        (code, stdout, stderr) = CliRunner.Run(Train(run, images, 2, "--overwrite", "--learning-rate", "1e-2", "--checkpoint-every-n-steps", "0"));
        Assert.True(code == 0, stderr);
        Assert.Contains("overwrite: deleted the earlier run's lora.safetensors, checkpoints/step-000002", stdout);
        Assert.NotEqual(lora, File.ReadAllBytes(Path.Combine(run, "lora.safetensors")));
        Assert.Equal(["step-000002"], Directory.GetDirectories(Path.Combine(run, "checkpoints")).Select(Path.GetFileName));
    }

    [Fact]
    public void Export_and_graph_outputs_never_overwrite_their_inputs_and_existing_files_need_force()
    {
        var lora = _dir.File("style.safetensors");
        File.Copy(Fixtures.SdTiny("refs/lora_kohya.safetensors"), lora);
        var loraBytes = File.ReadAllBytes(lora);
        var (code, _, stderr) = CliRunner.Run("export", "--model", Fixtures.SdTiny(), "--lora", lora + ":0.5", "--format", "ldm", "--out", lora, "--force");
        AssertOneErrorLine(code, stderr, $"would overwrite the input --lora {lora}");
        Assert.Equal(loraBytes, File.ReadAllBytes(lora));

        var existing = _dir.File("merged.safetensors");
        File.WriteAllText(existing, "keep me");
        (code, _, stderr) = CliRunner.Run("export", "--model", Fixtures.SdTiny(), "--lora", lora, "--out", existing);
        AssertOneErrorLine(code, stderr, "exists; pass --force to replace it");
        Assert.Equal("keep me", File.ReadAllText(existing));

        var inputs = _dir.File("inputs.safetensors");
        File.Copy(Fixtures.SdTiny("refs/vae_encoder.safetensors"), inputs);
        var inputBytes = File.ReadAllBytes(inputs);
        (code, _, stderr) = CliRunner.Run("graph", "run", "--model", Fixtures.SdTiny("vae_encoder/model.onnx"), "--inputs", inputs, "--out", inputs, "--force");
        AssertOneErrorLine(code, stderr, "would overwrite the input --inputs");
        Assert.Equal(inputBytes, File.ReadAllBytes(inputs));
        (code, _, stderr) = CliRunner.Run("graph", "run", "--model", Fixtures.SdTiny("vae_encoder/model.onnx"), "--inputs", inputs, "--out", existing);
        AssertOneErrorLine(code, stderr, "exists; pass --force");
        (code, _, stderr) = CliRunner.Run("graph", "grad", "--model", Fixtures.SdTiny("unet/model.onnx"), "--inputs", inputs, "--target", "t", "--out", inputs);
        AssertOneErrorLine(code, stderr, "would overwrite the input --inputs");
        (code, _, stderr) = CliRunner.Run("sample", "--model", Fixtures.SdTiny(), "--prompt", "x", "--latents", inputs, "--out-tensors", inputs, "--out", _dir.File("png"));
        AssertOneErrorLine(code, stderr, "would overwrite the input --latents");

        // With --force an existing output that is no input is replaced.
        (code, _, stderr) = CliRunner.Run("graph", "run", "--model", Fixtures.SdTiny("vae_encoder/model.onnx"), "--inputs", inputs, "--out", existing, "--force");
        Assert.True(code == 0, stderr);
        Assert.NotEmpty(SafetensorsFile.ReadAll(existing));
    }

    [Theory]
    [InlineData("abc", "multiplier 'abc' is not a finite number")]
    [InlineData("NaN", "multiplier 'NaN' is not a finite number")]
    [InlineData("", "multiplier '' is not a finite number")]
    public void A_bad_lora_multiplier_is_named_as_such(string multiplier, string expected)
    {
        foreach (var verb in new[] { "sample", "export" })
        {
            string[] args = verb == "sample"
                ? ["sample", "--model", Fixtures.SdTiny(), "--prompt", "x", "--steps", "1", "--lora", Fixtures.SdTiny("refs/lora_kohya.safetensors") + ":" + multiplier, "--out", _dir.File("png")]
                : ["export", "--model", Fixtures.SdTiny(), "--lora", Fixtures.SdTiny("refs/lora_kohya.safetensors") + ":" + multiplier, "--out", _dir.File("m.safetensors")];
            var (code, _, stderr) = CliRunner.Run(args);
            AssertOneErrorLine(code, stderr, expected);
        }
    }

    [Theory]
    [InlineData("--width", "0")]
    [InlineData("--height", "0")]
    [InlineData("--width", "-64")]
    [InlineData("--threads", "-1")]
    public void Zero_or_negative_sizes_are_refused_not_read_as_the_default(string flag, string value)
    {
        var (code, _, stderr) = CliRunner.Run("sample", "--model", Fixtures.SdTiny(), "--prompt", "x", "--steps", "1", flag, value, "--out", _dir.File("png"));
        AssertOneErrorLine(code, stderr, $"{flag} {value}");
        Assert.False(Directory.Exists(_dir.File("png")));
    }

    [Theory]
    [InlineData("pndm")]
    [InlineData("ddim")]
    [InlineData("ddpm")]
    public void Sample_with_1000_steps_and_steps_offset_1_is_a_user_error(string scheduler)
    {
        var (code, _, stderr) = CliRunner.Run("sample", "--model", Fixtures.SdTiny(), "--prompt", "x", "--steps", "1000", "--scheduler", scheduler, "--out", _dir.File("png"));
        var last = stderr.Trim().Split('\n')[^1];
        Assert.Equal(1, code);
        Assert.Contains("error: 1000 steps with timestep_spacing leading and steps_offset 1 reach timestep 1000", last);
        Assert.Contains("999 steps", last);
    }

    [Fact]
    public void A_lora_full_of_nan_is_warned_about()
    {
        var source = SafetensorsFile.ReadAll(Fixtures.SdTiny("refs/lora_kohya.safetensors"));
        var poisoned = source.ToDictionary(kv => kv.Key, kv =>
        {
            if (!kv.Key.EndsWith(".lora_up.weight", StringComparison.Ordinal)) return kv.Value;
            var values = kv.Value.ToFloat32Array();
            Array.Fill(values, float.NaN);
            return Tensor.FromArray(values, kv.Value.Shape);
        });
        var nan = _dir.File("nan.safetensors");
        SafetensorsWriter.Write(nan, poisoned);
        var (code, _, stderr) = CliRunner.Run("sample", "--model", Fixtures.SdTiny(), "--prompt", "x", "--steps", "1", "--width", "64", "--height", "64",
            "--engine", "cudadream", "--lora", nan, "--seed", "1", "--out", _dir.File("png"));
        output.WriteLine(stderr);
        Assert.Equal(0, code);
        Assert.Contains($"warning: {nan}: ", stderr);
        Assert.Contains("hold NaN or infinite values", stderr);
        var model = _dir.File("imported");
        (code, _, stderr) = CliRunner.Run("import", Fixtures.SdTiny("checkpoint.safetensors"), "--out", model, "--tokenizer", Fixtures.SdTiny("tokenizer"), "--config", Fixtures.SdTiny("configs"));
        Assert.True(code == 0, stderr);
        (code, _, stderr) = CliRunner.Run("export", "--model", model, "--lora", nan, "--out", _dir.File("merged.safetensors"));
        Assert.True(code == 0, stderr);
        Assert.Contains("hold NaN or infinite values", stderr);
    }
}
