using CudaDream.Engine.Backends.Device;
using CudaDream.Engine.Formats;
using CudaDream.Engine.Training;
using CudaDream.TestSupport;
using Xunit;

namespace CudaDream.Engine.Tests.Device;

/// <summary>
/// [E3] acceptance on the emulated CUDA backend: the training step (forward, MSE, backward) through the
/// tiny UNet toward 88 rank-4 LoRA adapters and the input matches PyTorch autograd, as on the CPU
/// (Training/LoraGradientReferenceTests).
/// </summary>
public class DeviceLoraGradientReferenceTests
{
    private static void AssertMatchesTorch(bool checkpointing, string backend)
    {
        var refPath = Fixtures.SdTiny("refs/unet_lora_grad.safetensors");
        var refs = SafetensorsFile.ReadAll(refPath);
        var got = GraphGradient.Run(new GraphGradientRequest
        {
            Model = Fixtures.SdTiny("unet/model.onnx"), Tensors = refs, Target = "target", Lora = refPath,
            Wrt = ["lora", "sample"], GradientCheckpointing = checkpointing, Backend = ExecutionBackend.Parse(backend),
        });
        TensorAssert.Close(refs["loss"], got["loss"], 1e-4, "loss");
        TensorAssert.Close(refs["out_sample"], got["out_sample"], 1e-4, "out_sample");
        TensorAssert.Close(refs["sample.grad"], got["sample.grad"], 1e-4, "sample.grad");
        var loraGrads = refs.Keys.Where(k => k.EndsWith(".lora_down.weight.grad") || k.EndsWith(".lora_up.weight.grad")).ToList();
        Assert.Equal(176, loraGrads.Count);
        foreach (var k in loraGrads)
        {
            Assert.True(got.ContainsKey(k), $"missing {k}");
            TensorAssert.Close(refs[k], got[k], 1e-4, k);
        }
    }

    [Fact]
    public void FusedGraphMatchesPyTorchAutograd() => AssertMatchesTorch(checkpointing: false, "emu");

    [Fact]
    public void CheckpointedGraphMatchesPyTorchAutograd() => AssertMatchesTorch(checkpointing: true, "emu");

    [Theory, Trait("Category", "Slow")]
    [InlineData("emu75")]
    [InlineData("emu90")]
    public void OtherTiersMatchPyTorchAutograd(string backend) => AssertMatchesTorch(checkpointing: false, backend);
}
