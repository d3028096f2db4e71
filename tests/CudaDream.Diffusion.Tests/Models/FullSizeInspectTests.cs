using CudaDream.Diffusion.Models.Builder;
using CudaDream.Engine;
using CudaDream.Engine.Graph;
using CudaDream.TestSupport;
using Xunit;

namespace CudaDream.Diffusion.Tests.Models;

/// <summary>
/// [E1] acceptance: inspect handles the full CLIP ViT-L/14 text encoder and the full SD 1.5 VAE as it handles the
/// UNet — specialised with no shape arithmetic left and every pattern fused. The graphs are CudaDream's shape-only
/// builds (their node patterns are those of the torch exports, see sd-tiny README), written like the
/// sd15-structure fixture: all weights in an absent external file.
/// </summary>
public class FullSizeInspectTests
{
    private static GraphReport Inspect(BuiltGraph built, Dictionary<string, int[]> shapes)
    {
        using var dir = Fixtures.TempDir();
        var path = dir.File("model.onnx");
        ShapesOnlyGraph.Write(built, path);
        return GraphInspector.Inspect(path, shapes);
    }

    [Fact]
    public void ClipVitL14TextEncoder()
    {
        var r = Inspect(ClipTextGraph.Build(ClipTextConfig.Sd15, null), new() { ["input_ids"] = new[] { 1, 77 } });
        Assert.Equal(123_060_480, r.Parameters);
        Assert.False(r.WeightsLoaded);
        Assert.Equal(0, r.RemainingShapeArithmetic);
        Assert.Equal(12, r.OpsAfter!["Attention"]);
        Assert.Equal(12, r.OpsAfter["QuickGelu"]);
        Assert.Equal(25, r.OpsAfter["LayerNorm"]);
        Assert.False(r.OpsAfter.ContainsKey("Softmax"));
    }

    [Fact]
    public void Sd15VaeEncoderAndDecoder()
    {
        var enc = Inspect(VaeGraphs.BuildEncoder(VaeConfig.Sd15, null), new() { ["sample"] = new[] { 1, 3, 512, 512 } });
        var dec = Inspect(VaeGraphs.BuildDecoder(VaeConfig.Sd15, null), new() { ["latent_sample"] = new[] { 1, 4, 64, 64 } });
        Assert.Equal(83_653_863, enc.Parameters + dec.Parameters);
        foreach (var r in new[] { enc, dec })
        {
            Assert.Equal(0, r.RemainingShapeArithmetic);
            Assert.Equal(1, r.OpsAfter!["Attention"]); // the mid block's single 512-wide head
            Assert.False(r.OpsAfter.ContainsKey("Softmax"));
            Assert.False(r.OpsAfter.ContainsKey("InstanceNormalization"));
        }
        Assert.Equal(22, enc.OpsAfter!["GroupNorm"]);
        Assert.Equal(30, dec.OpsAfter!["GroupNorm"]);
        Assert.Equal(3, dec.OpsAfter["UpsampleNearest"]);
    }
}
