using CudaDream.Engine.Formats;
using CudaDream.Engine.Training;
using CudaDream.TestSupport;
using Xunit;

namespace CudaDream.Engine.Tests.Training;

/// <summary>
/// [E2] acceptance: gradients through the whole tiny UNet toward 88 rank-4 LoRA adapters and the input,
/// against PyTorch autograd (refs/unet_lora_grad.safetensors, diffusers' LoRALinearLayer).
/// </summary>
public class LoraGradientReferenceTests
{
    private static void AssertMatchesTorch(bool fuse, bool checkpointing)
    {
        var refPath = Fixtures.SdTiny("refs/unet_lora_grad.safetensors");
        var refs = SafetensorsFile.ReadAll(refPath);
        var got = GraphGradient.Run(new GraphGradientRequest
        {
            Model = Fixtures.SdTiny("unet/model.onnx"), Tensors = refs, Target = "target", Lora = refPath,
            Wrt = new[] { "lora", "sample" }, Fuse = fuse, GradientCheckpointing = checkpointing,
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
    public void FusedGraphMatchesPyTorchAutograd() => AssertMatchesTorch(fuse: true, checkpointing: false);

    [Fact]
    public void CheckpointedGraphMatchesPyTorchAutograd() => AssertMatchesTorch(fuse: true, checkpointing: true);
}
