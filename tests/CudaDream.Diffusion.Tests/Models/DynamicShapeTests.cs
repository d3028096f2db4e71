using CudaDream.Diffusion.Models.Builder;
using CudaDream.Diffusion.Models.Import;
using CudaDream.Engine.Formats;
using CudaDream.Engine.Tensors;
using CudaDream.TestSupport;
using Xunit;
using Xunit.Abstractions;

namespace CudaDream.Diffusion.Tests.Models;

/// <summary>
/// The graphs take any batch, image size and prompt length. Where PyTorch's own export also runs
/// (sizes the UNet halves evenly), both graphs agree on ONNX Runtime; where it cannot (latent sizes that
/// are not multiples of 2^levels, which diffusers handles with upsample_size), ours still runs and keeps the size.
/// </summary>
public sealed class DynamicShapeTests(ImportedTinyModel tiny, ITestOutputHelper output) : IClassFixture<ImportedTinyModel>
{
    private readonly string _model = tiny.Folder;

    private static Tensor Noise(int seed, params int[] shape)
    {
        var rng = new Random(seed);
        return Tensor.FromArray(Enumerable.Range(0, (int)Shapes.Numel(shape)).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray(), shape);
    }

    private void Same(string ours, string torchExport, Dictionary<string, Tensor> inputs, string outputName)
    {
        var a = OrtRunner.Run(Path.Combine(_model, ours), inputs)[outputName];
        var b = OrtRunner.Run(Fixtures.SdTiny(torchExport), inputs)[outputName];
        double err = TensorAssert.RelativeMaxError(a, b);
        output.WriteLine($"{ours} {outputName} {a}: {err:E2} vs the torch export");
        TensorAssert.Close(b, a, 1e-4, ours);
    }

    [Fact]
    public void UNetAgreesWithTheTorchExportAtAnotherSizeAndBatch() =>
        Same("unet/model.onnx", "unet_opset17/model.onnx", new()
        {
            ["sample"] = Noise(1, 3, 4, 24, 8),
            ["timestep"] = Tensor.FromArray(new[] { 1f, 500f, 981f }, 3),
            ["encoder_hidden_states"] = Noise(2, 3, 20, 32),
        }, "out_sample");

    [Fact]
    public void UNetExpandsAOneElementTimestepToTheBatch()
    {
        var inputs = new Dictionary<string, Tensor> { ["sample"] = Noise(1, 2, 4, 8, 8), ["timestep"] = Tensor.FromArray(new[] { 250f }, 1), ["encoder_hidden_states"] = Noise(2, 2, 77, 32) };
        Same("unet/model.onnx", "unet_opset17/model.onnx", inputs, "out_sample");
    }

    [Theory]
    [InlineData(13, 10)]
    [InlineData(9, 7)]
    [InlineData(1, 1)]
    public void UNetRunsAtLatentSizesThatDoNotHalveEvenly(int h, int w)
    {
        var o = OrtRunner.Run(Path.Combine(_model, "unet/model.onnx"), new()
        {
            ["sample"] = Noise(3, 1, 4, h, w), ["timestep"] = Tensor.FromArray(new[] { 10f }, 1), ["encoder_hidden_states"] = Noise(4, 1, 77, 32),
        })["out_sample"];
        Assert.Equal(new[] { 1, 4, h, w }, o.Shape);
        Assert.All(o.ToFloat32Array(), v => Assert.True(float.IsFinite(v)));
    }

    [Fact]
    public void VaeAndTextEncoderAgreeWithTheTorchExportsAtOtherSizes()
    {
        Same("vae_decoder/model.onnx", "vae_decoder/model.onnx", new() { ["latent_sample"] = Noise(5, 2, 4, 5, 7) }, "sample");
        var ids = new int[2 * 20];
        var rng = new Random(6);
        for (int i = 0; i < ids.Length; i++) ids[i] = rng.Next(0, 998);
        ids[0] = 998; ids[20] = 998; ids[9] = 999; ids[39] = 999;
        var input = new Dictionary<string, Tensor> { ["input_ids"] = Tensor.FromArray(ids, 2, 20) };
        Same("text_encoder/model.onnx", "text_encoder/model.onnx", input, "last_hidden_state");
        Same("text_encoder/model.onnx", "text_encoder/model.onnx", input, "pooler_output");
    }

    [Fact]
    public void VaeEncoderMomentsAreDeterministicAtAnyMultipleOfEight()
    {
        var image = Noise(7, 1, 3, 40, 24);
        var a = OrtRunner.Run(Path.Combine(_model, "vae_encoder/model.onnx"), new() { ["sample"] = image });
        var b = OrtRunner.Run(Path.Combine(_model, "vae_encoder/model.onnx"), new() { ["sample"] = image });
        Assert.Equal(new[] { 1, 8, 5, 3 }, a["moments"].Shape);
        Assert.Equal(new[] { 1, 4, 5, 3 }, a["latent_sample"].Shape);
        Assert.Equal(a["moments"].ToFloat32Array(), b["moments"].ToFloat32Array());
    }

}

/// <summary>The sd-tiny checkpoint imported once for a test class.</summary>
public sealed class ImportedTinyModel : IDisposable
{
    private readonly TempDir _dir = Fixtures.TempDir();
    public string Folder { get; }

    public ImportedTinyModel()
    {
        Folder = _dir.File("model");
        CheckpointImporter.Import(Fixtures.SdTiny("checkpoint.safetensors"), Folder, ImportTests.TinyOptions());
    }

    public void Dispose() => _dir.Dispose();
}
