using System.Text.Json;
using CudaDream.Engine.Backends.Cuda.Interop;
using CudaDream.Engine.Formats;
using CudaDream.Engine.Ops;
using CudaDream.TestSupport;
using Xunit;

namespace CudaDream.Cli.Tests;

/// <summary>`graph run` and `graph grad` with --backend: the emulated CUDA backend reproduces the PyTorch references.</summary>
[Collection("Console")]
public class GraphBackendTests
{
    [Theory]
    [InlineData("emu")]
    [InlineData("emu75")]
    [InlineData("emu90")]
    public void GraphRunOnTheEmulatorReproducesTheTextEncoderReference(string backend)
    {
        using var dir = Fixtures.TempDir();
        var outPath = dir.File("out.safetensors");
        var (code, stdout, stderr) = CliRunner.Run("graph", "run", "--model", Fixtures.SdTiny("text_encoder/model.onnx"),
            "--inputs", Fixtures.SdTiny("refs/text_encoder.safetensors"), "--out", outPath, "--backend", backend, "--json");
        Assert.True(code == 0, stderr);
        using var doc = JsonDocument.Parse(stdout);
        Assert.Equal(backend, doc.RootElement.GetProperty("backend").GetString());
        Assert.StartsWith("emu sm_", doc.RootElement.GetProperty("device").GetString());
        var refs = SafetensorsFile.ReadAll(Fixtures.SdTiny("refs/text_encoder.safetensors"));
        var got = SafetensorsFile.ReadAll(outPath);
        TensorAssert.Close(refs["last_hidden_state"], got["last_hidden_state"], 1e-4, "last_hidden_state");
        TensorAssert.Close(refs["pooler_output"], got["pooler_output"], 1e-4, "pooler_output");
    }

    [Fact]
    public void GraphGradOnTheEmulatorReproducesTheLoraGradientReference()
    {
        using var dir = Fixtures.TempDir();
        var outPath = dir.File("grads.safetensors");
        var refPath = Fixtures.SdTiny("refs/unet_lora_grad.safetensors");
        var (code, stdout, stderr) = CliRunner.Run("graph", "grad", "--model", Fixtures.SdTiny("unet/model.onnx"), "--inputs", refPath,
            "--target", "target", "--lora", refPath, "--wrt", "lora,sample", "--out", outPath, "--backend", "emu", "--json");
        Assert.True(code == 0, stderr);
        using var doc = JsonDocument.Parse(stdout);
        Assert.Equal(177, doc.RootElement.GetProperty("gradients").GetInt32());
        var refs = SafetensorsFile.ReadAll(refPath);
        var got = SafetensorsFile.ReadAll(outPath);
        foreach (var k in refs.Keys.Where(k => k.EndsWith(".grad") || k is "loss" or "out_sample"))
            TensorAssert.Close(refs[k], got[k], 1e-4, k);
    }

    [FactWhen(Requirement.NoCudaDriver)]
    public void CudaWithoutADriverIsOneLineNamingTheLibrary()
    {
        using var dir = Fixtures.TempDir();
        var outPath = dir.File("out.safetensors");
        var (code, _, stderr) = CliRunner.Run("graph", "run", "--model", Fixtures.SdTiny("text_encoder/model.onnx"),
            "--inputs", Fixtures.SdTiny("refs/text_encoder.safetensors"), "--out", outPath, "--backend", "cuda");
        Assert.Equal(1, code);
        Assert.Single(stderr.Trim().Split('\n'));
        Assert.Contains("libcuda.so.1", stderr);
        Assert.False(File.Exists(outPath));
    }

    [Theory]
    [InlineData("emu60")]
    [InlineData("cuda:x")]
    public void MalformedBackendNamesAreRefused(string backend)
    {
        var (code, _, stderr) = CliRunner.Run("graph", "grad", "--model", "m.onnx", "--inputs", "i.safetensors", "--target", "t",
            "--out", "o.safetensors", "--backend", backend);
        Assert.Equal(1, code);
        Assert.Contains($"--backend '{backend}'", stderr);
        Assert.Contains("emu75", stderr);
    }
}
