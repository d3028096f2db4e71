using CudaDream.Engine;
using CudaDream.Engine.Backends.Device;
using CudaDream.Engine.Formats;
using CudaDream.Engine.Ops;
using CudaDream.Engine.Tensors;
using CudaDream.TestSupport;
using Xunit;

namespace CudaDream.Engine.Tests.Device;

/// <summary>
/// The emulated CUDA backend reproduces the PyTorch reference outputs of the sd-tiny exports, as the CPU
/// backend does (Graph/ReferenceForwardTests; DESIGN.md: ≤ 1e-4 · max|ref|). The graphs run the same
/// host path as cuda: plan, one device allocation, kernels from kernels/*.cu.
/// </summary>
public class DeviceReferenceForwardTests
{
    private const double Tolerance = 1e-4;

    private static Dictionary<string, Tensor> Run(string model, Dictionary<string, Tensor> refs, bool fuse, string backend, string[] inputs, string[]? extra = null, ulong seed = 0)
    {
        using var s = GraphSession.Create(Fixtures.SdTiny(model), inputs.ToDictionary(i => i, i => refs[i].Shape),
            new GraphSessionOptions { Fuse = fuse, ExtraOutputs = extra ?? [], Backend = ExecutionBackend.Parse(backend), Seed = seed });
        Assert.StartsWith("emu sm_", s.BackendName);
        return s.Run(refs);
    }

    private static readonly string[] UNetInputs = ["sample", "timestep", "encoder_hidden_states"];

    [Theory]
    [InlineData("unet/model.onnx", "emu")]
    [InlineData("unet/model.onnx", "emu75")]
    [InlineData("unet/model.onnx", "emu90")]
    [InlineData("unet_opset17/model.onnx", "emu")]
    public void UNetMatchesPyTorch(string model, string backend)
    {
        var refs = SafetensorsFile.ReadAll(Fixtures.SdTiny("refs/unet.safetensors"));
        var o = Run(model, refs, true, backend, UNetInputs);
        TensorAssert.Close(refs["out_sample"], o["out_sample"], Tolerance, $"{model} on {backend}");
    }

    /// <summary>The unfused graph: Softmax, ReduceMean, Transpose, Gemm, InstanceNormalization ... one kernel each (about 20 s emulated).</summary>
    [Fact, Trait("Category", "Slow")]
    public void UnfusedUNetMatchesPyTorch()
    {
        var refs = SafetensorsFile.ReadAll(Fixtures.SdTiny("refs/unet.safetensors"));
        var o = Run("unet/model.onnx", refs, false, "emu", UNetInputs);
        TensorAssert.Close(refs["out_sample"], o["out_sample"], Tolerance, "unfused unet");
    }

    /// <summary>int32 input_ids, Gather of embeddings, ArgMax pooling and int64 index arithmetic run on the device.</summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void TextEncoderMatchesPyTorch(bool fuse)
    {
        var refs = SafetensorsFile.ReadAll(Fixtures.SdTiny("refs/text_encoder.safetensors"));
        var o = Run("text_encoder/model.onnx", refs, fuse, "emu", ["input_ids"]);
        TensorAssert.Close(refs["last_hidden_state"], o["last_hidden_state"], Tolerance, "last_hidden_state");
        TensorAssert.Close(refs["pooler_output"], o["pooler_output"], Tolerance, "pooler_output");
    }

    [Fact]
    public void VaeDecoderMatchesPyTorch()
    {
        var refs = SafetensorsFile.ReadAll(Fixtures.SdTiny("refs/vae_decoder.safetensors"));
        var o = Run("vae_decoder/model.onnx", refs, true, "emu", ["latent_sample"]);
        TensorAssert.Close(refs["sample"], o["sample"], Tolerance, "sample");
    }

    /// <summary>
    /// moments, mean and std against PyTorch; latent_sample is the graph's own RandomNormalLike draw, which the
    /// device takes from the same counter-based generator as the CPU: the two backends agree on it.
    /// </summary>
    [Fact]
    public void VaeEncoderMomentsMatchPyTorchAndTheNoiseMatchesTheCpu()
    {
        var refs = SafetensorsFile.ReadAll(Fixtures.SdTiny("refs/vae_encoder.safetensors"));
        string[] extra = ["/quant_conv/Conv_output_0", "/Slice_output_0", "/Exp_output_0"];
        var o = Run("vae_encoder/model.onnx", refs, true, "emu", ["sample"], extra, seed: 11);
        TensorAssert.Close(refs["moments"], o["/quant_conv/Conv_output_0"], Tolerance, "moments");
        TensorAssert.Close(refs["mean"], o["/Slice_output_0"], Tolerance, "mean");
        TensorAssert.Close(refs["std"], o["/Exp_output_0"], Tolerance, "std");
        using var cpu = GraphSession.Create(Fixtures.SdTiny("vae_encoder/model.onnx"), new Dictionary<string, int[]> { ["sample"] = refs["sample"].Shape },
            new GraphSessionOptions { Seed = 11 });
        TensorAssert.Close(cpu.Run(refs)["latent_sample"], o["latent_sample"], Tolerance, "latent_sample (cpu vs emu)");
    }
}
