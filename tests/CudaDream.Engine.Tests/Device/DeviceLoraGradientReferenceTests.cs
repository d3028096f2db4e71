using CudaDream.Engine;
using CudaDream.Engine.Backends.Device;
using CudaDream.Engine.Ops;
using Xunit;

namespace CudaDream.Engine.Tests.Device;

/// <summary>
/// [E3] acceptance on the emulated CUDA backend: the training step (forward, MSE, backward) through the
/// tiny UNet toward 88 rank-4 LoRA adapters and the input matches PyTorch autograd, as on the CPU
/// (Training/LoraGradientReferenceTests).
/// </summary>
public class DeviceLoraGradientReferenceTests
{
    private static void AssertMatchesTorch(bool checkpointing, string backend) =>
        Training.LoraGradientReferenceTests.AssertMatchesTorch(fuse: true, checkpointing, ExecutionBackend.Parse(backend));

    [Fact]
    public void FusedGraphMatchesPyTorchAutograd() => AssertMatchesTorch(checkpointing: false, "emu");

    [Fact]
    public void CheckpointedGraphMatchesPyTorchAutograd() => AssertMatchesTorch(checkpointing: true, "emu");

    [Theory, Trait("Category", "Slow")]
    [InlineData("emu75")]
    [InlineData("emu90")]
    public void OtherTiersMatchPyTorchAutograd(string backend) => AssertMatchesTorch(checkpointing: false, backend);
}
