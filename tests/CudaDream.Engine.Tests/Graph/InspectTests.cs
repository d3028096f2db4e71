using CudaDream.Engine.Graph;
using CudaDream.TestSupport;
using Xunit;

namespace CudaDream.Engine.Tests.Graph;

public class InspectTests
{
    /// <summary>The full SD 1.5 UNet graph (weights absent): specialised at batch 1, 64×64 latents, 77 tokens.</summary>
    [Fact]
    public void Sd15UNetSpecialisesAndFusesCompletely()
    {
        var r = GraphInspector.Inspect(Fixtures.Path("sd15-structure/unet/model.onnx"), new Dictionary<string, int[]>
        {
            ["sample"] = new[] { 1, 4, 64, 64 }, ["timestep"] = new[] { 1 }, ["encoder_hidden_states"] = new[] { 1, 77, 768 },
        });
        Assert.False(r.WeightsLoaded);
        Assert.Equal(859_520_964, r.Parameters);
        Assert.Equal(0, r.RemainingShapeArithmetic);
        Assert.Equal(32, r.OpsAfter!["Attention"]);
        Assert.Equal(61, r.OpsAfter["GroupNorm"]);
        Assert.Equal(16, r.OpsAfter["Geglu"]);
        Assert.Equal(48, r.OpsAfter["LayerNorm"]);
        Assert.Equal(1, r.OpsAfter["TimestepEmbedding"]);
        Assert.Equal(3, r.OpsAfter["UpsampleNearest"]);
        Assert.False(r.OpsAfter.ContainsKey("MatMul"));
        Assert.False(r.OpsAfter.ContainsKey("Softmax"));
        // ~0.8 TFLOPs is the published cost of one SD 1.5 UNet step at 512×512.
        Assert.InRange(r.ForwardFlops!.Value, 7.5e11, 8.5e11);
        Assert.True(r.ActivationBytes < r.ActivationBytesUnplanned);
    }

    [Fact]
    public void FixtureUNetFusedCounts()
    {
        var r = GraphInspector.Inspect(Fixtures.SdTiny("unet/model.onnx"), new Dictionary<string, int[]>
        {
            ["sample"] = new[] { 2, 4, 16, 16 }, ["timestep"] = new[] { 2 }, ["encoder_hidden_states"] = new[] { 2, 77, 32 },
        });
        Assert.True(r.WeightsLoaded);
        Assert.Equal(2_164_452, r.Parameters);
        Assert.Equal(22, r.OpsAfter!["Attention"]);
        Assert.Equal(46, r.OpsAfter["GroupNorm"]);
        Assert.Equal(11, r.OpsAfter["Geglu"]);
    }
}

public class TrainingMemoryTests
{
    /// <summary>[E2] acceptance: SD 1.5 at batch 1, 64×64 latents, rank-4 attention LoRA; checkpointing cuts the planned peak ≥ 40%.</summary>
    [Fact]
    public void CheckpointingCutsTheSd15TrainingPeak()
    {
        var r = CudaDream.Engine.Training.TrainingMemory.Estimate(Fixtures.Path("sd15-structure/unet/model.onnx"), new Dictionary<string, int[]>
        {
            ["sample"] = new[] { 1, 4, 64, 64 }, ["timestep"] = new[] { 1 }, ["encoder_hidden_states"] = new[] { 1, 77, 768 },
        }, rank: 4, new[] { "attention" });
        Assert.Equal(128, r.Adapters);
        Assert.True(r.PeakBytesCheckpointed < r.PeakBytes);
        Assert.True(r.Saving >= 0.4, $"checkpointing saves only {r.Saving:P1} ({r.PeakBytes} -> {r.PeakBytesCheckpointed})");
    }
}
