using CudaDream.Diffusion.Models;
using CudaDream.Diffusion.Models.Import;
using CudaDream.Diffusion.Sampling;
using CudaDream.TestSupport;
using Xunit;
using Xunit.Abstractions;

namespace CudaDream.Diffusion.Tests.Sampling;

/// <summary>sd-tiny's checkpoint imported into CudaDream's own graphs (weights named by module path, Linear as
/// MatMul(x, Transpose(W)), upsampling to the skip connection's size): one folder for the whole class.</summary>
public sealed class BuiltFolderFixture : IDisposable
{
    private readonly TempDir _dir = Fixtures.TempDir();
    private readonly Lazy<string> _half;
    public string Folder { get; }
    /// <summary>The same model with fp16 weights and activations.</summary>
    public string HalfFolder => _half.Value;

    public BuiltFolderFixture()
    {
        Folder = Import("built", Engine.Tensors.DType.F32);
        _half = new(() => Import("built-f16", Engine.Tensors.DType.F16));
    }

    private string Import(string name, Engine.Tensors.DType dtype)
    {
        var folder = _dir.File(name);
        CheckpointImporter.Import(Fixtures.SdTiny("checkpoint.safetensors"), folder, new ImportOptions
        {
            FloatType = dtype,
            TokenizerDir = Fixtures.SdTiny("tokenizer"),
            ConfigDir = Fixtures.SdTiny("configs"),
        });
        return folder;
    }

    public void Dispose() => _dir.Dispose();
}

/// <summary>
/// The same weights in CudaDream-built graphs must give the torch pipeline's results too — with LoRA (whose
/// weights here reach their MatMul through a Transpose node) on both engines — and accept any multiple of 8.
/// </summary>
public sealed class BuiltFolderTests(BuiltFolderFixture built, ITestOutputHelper output) : IClassFixture<BuiltFolderFixture>
{
    [Theory]
    [InlineData("ddim", SamplerEngine.Ort)]
    [InlineData("euler_ancestral", SamplerEngine.CudaDream)]
    public void Built_graphs_reproduce_the_recorded_pipeline_run(string name, SamplerEngine engine)
    {
        var reference = PipelineReference.Load(name);
        using var sampler = Sampler.Create(built.Folder, new SamplerOptions { Engine = engine });
        Check(reference, sampler.Generate(reference.Request()), $"{name} on built graphs, {engine}");
    }

    [Theory]
    [InlineData(SamplerEngine.Ort)]
    [InlineData(SamplerEngine.CudaDream)]
    public void Built_graphs_reproduce_the_recorded_LoRA_run(SamplerEngine engine)
    {
        var reference = PipelineReference.Load("ddim_lora");
        using var sampler = Sampler.Create(built.Folder, new SamplerOptions
        {
            Engine = engine,
            Loras = [new LoraSource.File(Fixtures.SdTiny("refs/lora_kohya.safetensors"), 0.8f)],
        });
        Assert.Equal(132, sampler.LoraModules);
        Check(reference, sampler.Generate(reference.Request()), $"ddim_lora on built graphs, {engine}");
    }

    /// <summary>
    /// fp16 graphs within DESIGN.md's fp16 bound (5e-3 of the reference's scale): ONNX Runtime computes in fp16;
    /// the CudaDream engine widens the stored fp16 weights to fp32 on load (its backends compute in fp32).
    /// </summary>
    [Theory]
    [InlineData(SamplerEngine.Ort)]
    [InlineData(SamplerEngine.CudaDream)]
    public void Half_precision_graphs_stay_within_the_fp16_bound(SamplerEngine engine)
    {
        var reference = PipelineReference.Load("ddim");
        using var sampler = Sampler.Create(built.HalfFolder, new SamplerOptions { Engine = engine });
        var result = sampler.Generate(reference.Request());
        double latentError = TensorAssert.RelativeMaxError(result.FinalLatents, reference.Tensors["final_latents"]);
        double imageError = PipelineReference.MaxAbsError(reference.Tensors["image"], result.Pixels);
        output.WriteLine($"fp16 ddim on {engine}: final latents {latentError:E2}, image {imageError:E2}");
        Assert.True(latentError <= 5e-3, $"final latents off by {latentError:E2}");
    }

    [Fact]
    public void Built_graphs_take_any_multiple_of_8_while_the_torch_export_needs_32()
    {
        var builtFolder = ModelFolder.Open(built.Folder);
        Assert.False(builtFolder.SizeRule.FixedScaleUpsampling);
        Assert.Equal(8, builtFolder.SizeRule.Multiple);
        builtFolder.CheckImageSize(72, 136);

        var exported = ModelFolder.Open(Fixtures.SdTiny());
        Assert.True(exported.SizeRule.FixedScaleUpsampling);
        // sd-tiny's UNet has 2 downsamplers (3 down blocks, the last without one): 8 · 2² = 32.
        Assert.Equal(32, exported.SizeRule.Multiple);
        var e = Assert.Throws<Engine.CudaDreamException>(() => exported.CheckImageSize(72, 136));
        Assert.Contains("64x128, 64x160, 96x128 or 96x160", e.Message);
        output.WriteLine(e.Message);

        // And the built graphs really run at a size the export refuses: 72x136 → latents 9x17.
        using var sampler = Sampler.Create(built.Folder, new SamplerOptions { Engine = SamplerEngine.Ort });
        var result = sampler.Generate(new GenerationRequest { Prompt = "a dog", Steps = 2, Width = 72, Height = 136, Scheduler = "ddim" });
        Assert.Equal([1, 136, 72, 3], result.Pixels.Shape);
    }

    private void Check(PipelineReference reference, GenerationResult result, string what) => reference.AssertMatches(result, output, what);
}
