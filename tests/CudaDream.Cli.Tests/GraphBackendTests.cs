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

    /// <summary>
    /// [G1] `--dtype bf16|fp16` on the emulator against PyTorch's fp32 references. A whole network is held to DESIGN.md's
    /// norm-wise bound ‖a − ref‖/‖ref‖ (3e-2 bf16, 5e-3 fp16): its error is the storage type's roundoff carried through every
    /// layer (the sd-tiny UNet: 2.3e-2 in bf16, 1.5e-3 in fp16, 8× apart as their 3 mantissa bits predict).
    /// </summary>
    [Theory]
    [InlineData("bf16", 3e-2)]
    [InlineData("fp16", 5e-3)]
    public void GraphRunInReducedPrecisionStaysWithinTheBound(string dtype, double bound)
    {
        using var dir = Fixtures.TempDir();
        foreach (var (graph, refs, output) in new[] { ("text_encoder/model.onnx", "refs/text_encoder.safetensors", "last_hidden_state"), ("unet/model.onnx", "refs/unet.safetensors", "out_sample") })
        {
            var outPath = dir.File(output + ".safetensors");
            var (code, _, stderr) = CliRunner.Run("graph", "run", "--model", Fixtures.SdTiny(graph), "--inputs", Fixtures.SdTiny(refs), "--out", outPath, "--backend", "emu", "--dtype", dtype);
            Assert.True(code == 0, stderr);
            var expected = SafetensorsFile.ReadAll(Fixtures.SdTiny(refs))[output];
            var got = SafetensorsFile.ReadAll(outPath)[output];
            Assert.Equal(Engine.Tensors.DType.F32, got.DType);
            double error = NormwiseError(expected, got);
            Assert.True(error <= bound, $"{graph} in {dtype}: {output} ‖a − ref‖/‖ref‖ = {error:G3} > {bound}");
        }
    }

    private static double NormwiseError(Engine.Tensors.Tensor expected, Engine.Tensors.Tensor actual)
    {
        var e = expected.ToFloat64Array();
        var a = actual.ToFloat64Array();
        double d = 0, r = 0;
        for (int i = 0; i < e.Length; i++) { d += (a[i] - e[i]) * (a[i] - e[i]); r += e[i] * e[i]; }
        return Math.Sqrt(d / r);
    }

    /// <summary>
    /// [G1] `graph grad --dtype` on the emulator: the 176 LoRA gradients together (and sample.grad) point where PyTorch's fp32
    /// ones do (cosine ≥ 0.999); fp16 seeds the backward with a loss scale, so small gradients survive.
    /// </summary>
    [Theory]
    [InlineData("bf16", 3e-2)]
    [InlineData("fp16", 5e-3)]
    public void GraphGradInReducedPrecisionMatchesTheLoraGradientReference(string dtype, double bound)
    {
        using var dir = Fixtures.TempDir();
        var outPath = dir.File("grads.safetensors");
        var refPath = Fixtures.SdTiny("refs/unet_lora_grad.safetensors");
        var (code, _, stderr) = CliRunner.Run("graph", "grad", "--model", Fixtures.SdTiny("unet/model.onnx"), "--inputs", refPath,
            "--target", "target", "--lora", refPath, "--wrt", "lora,sample", "--out", outPath, "--backend", "emu", "--dtype", dtype);
        Assert.True(code == 0, stderr);
        var refs = SafetensorsFile.ReadAll(refPath);
        var got = SafetensorsFile.ReadAll(outPath);
        Assert.True(NormwiseError(refs["out_sample"], got["out_sample"]) <= bound, "out_sample");
        Assert.True(Math.Abs(got["loss"].ToFloat64Array()[0] / refs["loss"].ToFloat64Array()[0] - 1) <= bound, $"loss {got["loss"]} vs {refs["loss"]}");
        var loraKeys = refs.Keys.Where(k => k.EndsWith(".grad", StringComparison.Ordinal) && k != "sample.grad").ToList();
        Assert.Equal(176, loraKeys.Count);
        var all = ConformanceRunner.CompareDirection("lora gradients", Concatenated(refs, loraKeys), Concatenated(got, loraKeys), ConformanceRunner.MinGradientCosine);
        Assert.True(all.Passed, $"LoRA gradients in {dtype}: cosine {1 - all.Error:F5} < {ConformanceRunner.MinGradientCosine}");
        var sample = ConformanceRunner.CompareDirection("sample.grad", refs["sample.grad"], got["sample.grad"], ConformanceRunner.MinGradientCosine);
        Assert.True(sample.Passed, $"sample.grad in {dtype}: cosine {1 - sample.Error:F5}");
    }

    private static Engine.Tensors.Tensor Concatenated(IReadOnlyDictionary<string, Engine.Tensors.Tensor> tensors, IEnumerable<string> keys)
    {
        var values = keys.SelectMany(k => tensors[k].ToFloat32Array()).ToArray();
        return Engine.Tensors.Tensor.FromArray(values, values.Length);
    }

    [Fact]
    public void ReducedPrecisionOnTheCpuIsRefused()
    {
        using var dir = Fixtures.TempDir();
        var (code, _, stderr) = CliRunner.Run("graph", "run", "--model", Fixtures.SdTiny("text_encoder/model.onnx"),
            "--inputs", Fixtures.SdTiny("refs/text_encoder.safetensors"), "--out", dir.File("o.safetensors"), "--dtype", "bf16");
        Assert.Equal(1, code);
        Assert.Contains("needs a kernel device", stderr);
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
