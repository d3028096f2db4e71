using CudaDream.Diffusion.Models;
using CudaDream.Diffusion.Models.Builder;
using CudaDream.TestSupport;
using CudaDream.TorchBench.Model;
using Xunit;

namespace CudaDream.TorchBench.Check;

/// <summary>The module tree and the weight mapping on architectures the sd-tiny weights do not cover.</summary>
public sealed class StructureChecks
{
    public static TheoryData<string> Configs => new() { "sd-tiny", "sd15-topology", "linear-projection", "one-layer-per-block" };

    private static UNetConfig Config(string name)
    {
        var tiny = UNetConfig.FromJson(File.ReadAllText(Fixtures.SdTiny("configs/unet/config.json")), "sd-tiny");
        return name switch
        {
            "sd-tiny" => tiny,
            // SD 1.5's four levels, layer counts and block types at small widths.
            "sd15-topology" => UNetConfig.Sd15 with { BlockOutChannels = [32, 64, 64, 64], NormGroups = 8, CrossAttentionDim = 32 },
            "linear-projection" => tiny with { UseLinearProjection = true },
            "one-layer-per-block" => tiny with { LayersPerBlock = 1, AttentionHeads = [4, 2, 2] },
            _ => throw new ArgumentException(name),
        };
    }

    [Theory]
    [MemberData(nameof(Configs))]
    public void TheModuleHasExactlyTheDiffusersParameters(string configName)
    {
        var config = Config(configName);
        using var model = new UNet2DConditionModel(config);
        var table = UNetGraph.Build(config, null).Initializers.Select(i => (i.Name, i.Shape)).ToList();
        Assert.NotEmpty(table);
        Assert.Empty(ReferenceUNet.DifferencesFromTable(model, table));
    }

    /// <summary>
    /// The full SD 1.5 UNet as PyTorch exports it (tests/fixtures/sd15-structure: every node and initializer, the
    /// 3.4 GB weights file removed): each of its parameters is found, attention weights as transposed MatMul operands
    /// and GroupNorm scales as the exporter's folded [C,1,1] Mul operands. The weights file is stood in for by a sparse
    /// file of its length, so that the graph opens; no weight is read.
    /// </summary>
    [Fact]
    public void EverySd15ParameterIsFoundInTheTorchExport()
    {
        using var dir = Fixtures.TempDir();
        Directory.CreateDirectory(dir.File("unet"));
        var onnx = dir.File("unet/model.onnx");
        File.Copy(Fixtures.Path("sd15-structure/unet/model.onnx"), onnx);
        using (var weights = File.Create(dir.File("unet/weights.pb"))) weights.SetLength(3_438_083_840);

        var expected = UNetGraph.Build(UNetConfig.Sd15, null).Initializers.Select(i => (i.Name, i.Shape)).ToList();
        var sources = OnnxUNetWeights.Resolve(ModelFolderGraph.Load(onnx), expected, onnx);

        Assert.Equal(686, expected.Count);
        Assert.Equal(expected.Count, sources.Count);
        var toQ = sources["down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight"];
        Assert.StartsWith("onnx::MatMul_", toQ.Initializer);
        Assert.True(toQ.Transposed);
        Assert.StartsWith("onnx::Mul_", sources["down_blocks.0.resnets.0.norm1.weight"].Initializer);
        Assert.Equal("conv_in.weight", sources["conv_in.weight"].Initializer);
        Assert.False(sources["time_embedding.linear_1.weight"].Transposed); // Gemm with transB = 1 stores [out, in]
    }
}
