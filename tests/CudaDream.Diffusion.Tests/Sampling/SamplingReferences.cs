using System.Text.Json;
using CudaDream.Diffusion.Sampling;
using CudaDream.Diffusion.Schedulers;
using CudaDream.Engine.Formats;
using CudaDream.Engine.Randomness;
using CudaDream.Engine.Tensors;
using CudaDream.TestSupport;
using Xunit;
using Xunit.Abstractions;

namespace CudaDream.Diffusion.Tests.Sampling;

/// <summary>The torch StableDiffusionPipeline runs of tests/fixtures/sd-tiny/refs/pipeline_&lt;s&gt;.* (diffusers 0.21.4).</summary>
internal sealed class PipelineReference
{
    public required string Name { get; init; }
    public required string Scheduler { get; init; }
    public required string Prompt { get; init; }
    public required string NegativePrompt { get; init; }
    public required int Steps { get; init; }
    public required double Guidance { get; init; }
    public required int Width { get; init; }
    public required int Height { get; init; }
    public required Dictionary<string, Tensor> Tensors { get; init; }

    public static readonly string[] All = ["ddim", "pndm", "euler", "lms", "dpmpp_2m_karras", "euler_ancestral", "unipc", "heun"];

    public static PipelineReference Load(string name)
    {
        var json = JsonDocument.Parse(SchedulerConfig.QuoteNonFiniteNumbers(File.ReadAllText(Fixtures.SdTiny($"refs/pipeline_{name}.json")))).RootElement;
        var call = json.GetProperty("call");
        using var file = SafetensorsFile.Open(Fixtures.SdTiny($"refs/pipeline_{name}.safetensors"));
        return new PipelineReference
        {
            Name = name,
            Scheduler = CliName(json.GetProperty("scheduler").GetString()!),
            Prompt = call.GetProperty("prompt").GetString()!,
            NegativePrompt = call.GetProperty("negative_prompt").GetString()!,
            Steps = call.GetProperty("num_inference_steps").GetInt32(),
            Guidance = call.GetProperty("guidance_scale").GetDouble(),
            Width = call.GetProperty("width").GetInt32(),
            Height = call.GetProperty("height").GetInt32(),
            Tensors = file.LoadAll(),
        };
    }

    public static string CliName(string refName) => refName switch
    {
        "euler_ancestral" => "euler-a",
        "dpmpp_2m_karras" => "dpmpp-2m-karras",
        _ => refName,
    };

    /// <summary>The call as a request: recorded prompts, size, steps, guidance, initial latents and (Euler a) recorded step noise.</summary>
    public GenerationRequest Request() => new()
    {
        Prompt = Prompt,
        NegativePrompt = NegativePrompt,
        Steps = Steps,
        CfgScale = Guidance,
        Scheduler = Scheduler,
        Width = Width,
        Height = Height,
        InitialLatents = Tensors["initial_latents"],
        StepNoise = Tensors.TryGetValue("noise", out var noise) && Scheduler == "euler-a" ? RecordedNoise.FromStacked(noise) : null,
    };

    /// <summary>The acceptance bound on the image in 0..1.</summary>
    public const double ImageTolerance = 1e-3;
    /// <summary>max |a − b| / max |reference| of the final latents (the recorded ORT-vs-torch gap is ≤ 1.9e-6).</summary>
    public const double LatentTolerance = 1e-4;

    public void AssertMatches(GenerationResult result, ITestOutputHelper output, string what)
    {
        var latentError = TensorAssert.RelativeMaxError(result.FinalLatents, Tensors["final_latents"]);
        var imageError = MaxAbsError(Tensors["image"], result.Pixels);
        output.WriteLine($"{what}: final latents {latentError:E2} (max|a-b|/max|ref|), image {imageError:E2} (max|a-b|) [{result.Engine}]");
        Assert.Equal(Tensors["image"].Shape, result.Pixels.Shape);
        Assert.True(latentError <= LatentTolerance, $"{what}: final latents off by {latentError:E2}");
        Assert.True(imageError <= ImageTolerance, $"{what}: image off by {imageError:E2}");
        Assert.Equal(Width, result.Images[0].Image.Width);
        Assert.Equal(Height, result.Images[0].Image.Height);
    }

    public static double MaxAbsError(Tensor expected, Tensor actual)
    {
        var e = expected.ToFloat32Array();
        var a = actual.ToFloat32Array();
        if (e.Length != a.Length) throw new InvalidOperationException($"sizes differ: {expected} vs {actual}");
        double worst = 0;
        for (int i = 0; i < e.Length; i++) worst = Math.Max(worst, Math.Abs((double)e[i] - a[i]));
        return worst;
    }
}
