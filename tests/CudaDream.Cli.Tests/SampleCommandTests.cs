using System.Text.Json;
using CudaDream.Diffusion.Images;
using CudaDream.Engine.Formats;
using CudaDream.Engine.Tensors;
using CudaDream.TestSupport;
using Xunit;
using Xunit.Abstractions;

namespace CudaDream.Cli.Tests;

/// <summary><c>cudadream sample</c> on sd-tiny against the recorded torch pipeline runs, and its refusals of bad input.</summary>
[Collection("Console")]
public sealed class SampleCommandTests(ITestOutputHelper output) : IDisposable
{
    private readonly TempDir _dir = Fixtures.TempDir();

    public void Dispose() => _dir.Dispose();

    private static string[] RecordedCall(string reference, string scheduler) =>
    [
        "sample", "--model", Fixtures.SdTiny(), "--prompt", "a photo of sks dog", "--negative", "blurry, low quality",
        "--steps", "8", "--cfg", "7.5", "--scheduler", scheduler, "--width", "128", "--height", "128",
        "--latents", Fixtures.SdTiny($"refs/{reference}.safetensors"), "--seed", "201",
    ];

    private void AssertTensorsMatch(string tensorsPath, string reference)
    {
        var expected = SafetensorsFile.ReadAll(Fixtures.SdTiny($"refs/{reference}.safetensors"));
        var actual = SafetensorsFile.ReadAll(tensorsPath);
        double latentError = TensorAssert.RelativeMaxError(actual["final_latents"], expected["final_latents"]);
        var e = expected["image"].ToFloat32Array();
        var a = actual["image"].ToFloat32Array();
        Assert.Equal(expected["image"].Shape, actual["image"].Shape);
        double imageError = e.Zip(a, (x, y) => Math.Abs((double)x - y)).Max();
        output.WriteLine($"{reference}: final latents {latentError:E2}, image {imageError:E2}");
        Assert.True(latentError <= 1e-4, $"final latents off by {latentError:E2}");
        Assert.True(imageError <= 1e-3, $"image off by {imageError:E2}");
    }

    [Theory]
    [InlineData("ort")]
    [InlineData("cudadream")]
    public void Reproduces_the_recorded_DDIM_run_and_writes_A1111_parameters(string engine)
    {
        var outDir = _dir.File("out");
        var tensors = _dir.File("t.safetensors");
        var (code, stdout, stderr) = CliRunner.Run([.. RecordedCall("pipeline_ddim", "ddim"), "--engine", engine, "--out", outDir, "--out-tensors", tensors, "--json"]);
        Assert.True(code == 0, stderr);
        AssertTensorsMatch(tensors, "pipeline_ddim");
        Assert.StartsWith("engine: " + (engine == "ort" ? "ONNX Runtime" : "CudaDream engine"), stderr);

        var json = JsonDocument.Parse(stdout).RootElement;
        var png = json.GetProperty("images")[0].GetProperty("path").GetString()!;
        Assert.Equal("00000-201.png", Path.GetFileName(png));
        Assert.Equal(
            "a photo of sks dog\nNegative prompt: blurry, low quality\nSteps: 8, Sampler: DDIM, CFG scale: 7.5, Seed: 201, Size: 128x128, Model: sd-tiny, Version: CudaDream",
            PngText.Read(png)["parameters"]);
        // The PNG holds the image tensor's pixels, rounded as diffusers' numpy_to_pil does.
        var pixels = SafetensorsFile.ReadAll(tensors)["image"].ToFloat32Array();
        Assert.Equal(pixels.Select(v => ImageTensors.ToByte(v, PixelRange.ZeroToOne)), ImageLoader.Load(png).Rgb);
    }

    [Fact]
    public void Reproduces_the_recorded_LoRA_run()
    {
        var tensors = _dir.File("t.safetensors");
        var (code, _, stderr) = CliRunner.Run([.. RecordedCall("pipeline_ddim_lora", "ddim"), "--engine", "ort",
            "--lora", Fixtures.SdTiny("refs/lora_kohya.safetensors") + ":0.8", "--out", _dir.File("out"), "--out-tensors", tensors]);
        Assert.True(code == 0, stderr);
        AssertTensorsMatch(tensors, "pipeline_ddim_lora");
        var png = Directory.GetFiles(_dir.File("out"), "*.png").Single();
        Assert.Contains("Lora hashes: \"lora_kohya: ", PngText.Read(png)["parameters"]);
    }

    [Fact]
    public void Batches_are_numbered_after_existing_files_and_gridded()
    {
        var outDir = _dir.File("out");
        Directory.CreateDirectory(outDir);
        File.WriteAllBytes(Path.Combine(outDir, "00041-5.png"), [0]);
        var (code, stdout, stderr) = CliRunner.Run("sample", "--model", Fixtures.SdTiny(), "--prompt", "a dog", "--steps", "2", "--width", "64", "--height", "64",
            "--batch-size", "2", "--batch-count", "2", "--seed", "100", "--scheduler", "euler-a", "--engine", "ort", "--grid", "--out", outDir);
        Assert.True(code == 0, stderr);
        var files = Directory.GetFiles(outDir).Select(f => Path.GetFileName(f)!).Order().ToArray();
        Assert.Equal(["00041-5.png", "00042-100.png", "00043-101.png", "00044-102.png", "00045-103.png", "grid-00042.png"], files);
        var grid = ImageLoader.Load(Path.Combine(outDir, "grid-00042.png"));
        Assert.True(grid.Width >= 128 && grid.Height >= 128);
        Assert.Contains("wrote 4 images", stdout);
    }

    [Fact]
    public void Img2img_runs_from_a_PNG()
    {
        var init = _dir.File("init.png");
        PngFile.Write(init, RgbImage.Filled(96, 64, 10, 200, 30));
        var (code, _, stderr) = CliRunner.Run("sample", "--model", Fixtures.SdTiny(), "--prompt", "a dog", "--steps", "4", "--width", "64", "--height", "64",
            "--init-image", init, "--strength", "0.5", "--seed", "3", "--engine", "ort", "--out", _dir.File("out"));
        Assert.True(code == 0, stderr);
        var png = Directory.GetFiles(_dir.File("out")).Single();
        Assert.Contains("Denoising strength: 0.5", PngText.Read(png)["parameters"]);
    }

    public static IEnumerable<object[]> BadInputs()
    {
        yield return ["size", "nearest valid sizes: 96x128 or 128x128"];
        yield return ["corrupt-image", "not a readable image"];
        yield return ["foreign-lora", "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight"];
        yield return ["missing-part", "missing unet/model.onnx"];
        yield return ["latents-without-tensor", "no tensor 'initial_latents'"];
        yield return ["strength-without-image", "--strength applies to img2img only"];
        yield return ["scheduler", "--scheduler plms: choose one of"];
    }

    /// <summary>Each bad input ends with one line on stderr, exit code 1, and nothing written.</summary>
    [Theory]
    [MemberData(nameof(BadInputs))]
    public void Bad_input_ends_with_one_clear_line_and_no_files(string what, string message)
    {
        var model = Fixtures.SdTiny();
        var extra = new List<string>();
        switch (what)
        {
            case "size": extra.AddRange(["--width", "100", "--height", "128"]); break;
            case "corrupt-image":
                var image = _dir.File("broken.png");
                File.WriteAllBytes(image, [0x89, (byte)'P', (byte)'N', (byte)'G', 1, 2, 3]);
                extra.AddRange(["--init-image", image]);
                break;
            case "foreign-lora":
                var lora = _dir.File("sd15.safetensors");
                const string module = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q";
                SafetensorsWriter.Write(lora, new Dictionary<string, Tensor>
                {
                    [module + ".lora_down.weight"] = Tensor.Zeros(DType.F32, 4, 320),
                    [module + ".lora_up.weight"] = Tensor.Zeros(DType.F32, 320, 4),
                });
                extra.AddRange(["--lora", lora + ":0.8"]);
                break;
            case "missing-part":
                model = _dir.File("model");
                Directory.CreateDirectory(model);
                foreach (var f in new[] { "model_index.json" }) File.Copy(Fixtures.SdTiny(f), Path.Combine(model, f));
                foreach (var d in new[] { "tokenizer", "scheduler", "text_encoder", "vae_decoder" })
                {
                    Directory.CreateDirectory(Path.Combine(model, d));
                    foreach (var f in Directory.GetFiles(Fixtures.SdTiny(d))) File.Copy(f, Path.Combine(model, d, Path.GetFileName(f)));
                }
                break;
            case "latents-without-tensor": extra.AddRange(["--latents", Fixtures.SdTiny("refs/unet.safetensors")]); break;
            case "strength-without-image": extra.AddRange(["--strength", "0.5"]); break;
            case "scheduler": extra.AddRange(["--scheduler", "plms"]); break;
        }
        var outDir = _dir.File("out");
        var tensors = _dir.File("t.safetensors");
        var (code, stdout, stderr) = CliRunner.Run(["sample", "--model", model, "--prompt", "a dog", "--steps", "2", "--engine", "ort",
            "--out", outDir, "--out-tensors", tensors, .. extra]);
        output.WriteLine(stderr);
        Assert.Equal(1, code);
        var line = Assert.Single(stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith("error: ", line);
        Assert.Contains(message, line);
        Assert.Equal("", stdout);
        Assert.False(Directory.Exists(outDir));
        Assert.False(File.Exists(tensors));
    }
}
