using System.Diagnostics;
using CudaDream.Diffusion.Sampling;
using CudaDream.Engine.Formats;
using CudaDream.Engine.Tensors;
using CudaDream.Engine.Training.Lora;
using CudaDream.TestSupport;
using Xunit;
using Xunit.Abstractions;

namespace CudaDream.Diffusion.Tests.Sampling;

/// <summary>
/// The sampler on tests/fixtures/sd-tiny (a complete diffusers ONNX folder) against the torch StableDiffusionPipeline
/// runs recorded there: same prompt, negative prompt, size, steps, guidance and initial latents (Euler a: the noise
/// torch drew, replayed) must give the same final latents and image, on ONNX Runtime and on CudaDream's engine.
/// </summary>
public class PipelineReferenceTests(ITestOutputHelper output)
{
    [Theory]
    [MemberData(nameof(AllReferences))]
    public void ONNX_Runtime_reproduces_the_recorded_pipeline_run(string name) => Reproduce(name, SamplerEngine.Ort);

    [Theory]
    [MemberData(nameof(AllReferences))]
    public void CudaDream_engine_reproduces_the_recorded_pipeline_run(string name) => Reproduce(name, SamplerEngine.CudaDream);

    public static IEnumerable<object[]> AllReferences() => PipelineReference.All.Select(s => new object[] { s });

    private void Reproduce(string name, SamplerEngine engine)
    {
        var reference = PipelineReference.Load(name);
        var watch = Stopwatch.StartNew();
        using var sampler = Sampler.Create(Fixtures.SdTiny(), new SamplerOptions { Engine = engine });
        var result = sampler.Generate(reference.Request());
        Check(reference, result, $"{name} on {engine}", watch.Elapsed);
    }

    [Theory]
    [InlineData(SamplerEngine.Ort)]
    [InlineData(SamplerEngine.CudaDream)]
    public void Reproduces_the_recorded_LoRA_run(SamplerEngine engine)
    {
        var reference = PipelineReference.Load("ddim_lora");
        var watch = Stopwatch.StartNew();
        using var sampler = Sampler.Create(Fixtures.SdTiny(), new SamplerOptions
        {
            Engine = engine,
            Loras = [new LoraSource.File(Fixtures.SdTiny("refs/lora_kohya.safetensors"), 0.8f)],
        });
        Assert.Equal(132, sampler.LoraModules);
        Assert.Empty(sampler.Warnings);
        var result = sampler.Generate(reference.Request());
        Check(reference, result, $"ddim_lora on {engine}", watch.Elapsed);
        // Without the LoRA the same call lands 4.5% of the latent scale away: the merge is really in effect.
        var plain = PipelineReference.Load("ddim");
        Assert.True(TensorAssert.RelativeMaxError(result.FinalLatents, plain.Tensors["final_latents"]) > 0.01);
    }

    /// <summary>The trainer's path: adapters already in memory (the ones the kohya file holds) instead of a file.</summary>
    [Fact]
    public void In_memory_adapters_give_the_same_result_as_the_file()
    {
        var reference = PipelineReference.Load("ddim_lora");
        var folder = CudaDream.Diffusion.Models.ModelFolder.Open(Fixtures.SdTiny());
        var targets = folder.LoraSlots().Select(s => new LoraTarget(s.Component, s.ModulePath, s.WeightShape)).ToList();
        var adapters = LoraFile.Load(Fixtures.SdTiny("refs/lora_kohya.safetensors"), targets).Adapters;
        using var sampler = Sampler.Create(folder, new SamplerOptions
        {
            Engine = SamplerEngine.Ort,
            Loras = [new LoraSource.Adapters("training", adapters, 0.8f)],
        });
        Check(reference, sampler.Generate(reference.Request()), "ddim_lora from in-memory adapters", TimeSpan.Zero);
    }

    private void Check(PipelineReference reference, GenerationResult result, string what, TimeSpan elapsed) =>
        reference.AssertMatches(result, output, $"{what} ({elapsed.TotalSeconds:F2} s)");
}
