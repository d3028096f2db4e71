using CudaDream.Engine;
using CudaDream.Engine.Formats;
using CudaDream.Engine.Graph;
using CudaDream.TestSupport;
using Xunit;
using Xunit.Abstractions;

namespace CudaDream.Diffusion.Tests.Models;

/// <summary>
/// The graphs `import` writes run on CudaDream's own CPU engine and reproduce the PyTorch references,
/// and the engine's pattern recogniser reduces them to the same fused ops as PyTorch's exports of the
/// same networks (nothing left unfused).
/// </summary>
public sealed class EngineAgreementTests(ImportedTinyModel tiny, ITestOutputHelper output) : IClassFixture<ImportedTinyModel>
{
    [Theory]
    [InlineData("text_encoder", "refs/text_encoder.safetensors", "input_ids", "last_hidden_state,pooler_output", true)]
    [InlineData("unet", "refs/unet.safetensors", "sample,timestep,encoder_hidden_states", "out_sample", true)]
    [InlineData("unet", "refs/unet.safetensors", "sample,timestep,encoder_hidden_states", "out_sample", false)]
    [InlineData("vae_decoder", "refs/vae_decoder.safetensors", "latent_sample", "sample", true)]
    [InlineData("vae_encoder", "refs/vae_encoder.safetensors", "sample", "moments", true)]
    public void CpuEngineReproducesTheReferences(string graph, string refFile, string inputs, string outputs, bool fuse)
    {
        var refs = SafetensorsFile.ReadAll(Fixtures.SdTiny(refFile));
        var names = inputs.Split(',');
        using var s = GraphSession.Create(Path.Combine(tiny.Folder, graph, "model.onnx"), names.ToDictionary(n => n, n => refs[n].Shape), new GraphSessionOptions { Fuse = fuse });
        var o = s.Run(names.ToDictionary(n => n, n => refs[n]));
        foreach (var name in outputs.Split(','))
        {
            output.WriteLine($"{graph} {name} fuse={fuse}: {TensorAssert.RelativeMaxError(o[name], refs[name]):E2}");
            TensorAssert.Close(refs[name], o[name], 1e-4, $"{graph} {name}");
        }
    }

    private static readonly string[] FusedAndHeavyOps =
    [
        "Attention", "Linear", "Conv", "GroupNorm", "LayerNorm", "Geglu", "Gelu", "QuickGelu", "Silu", "TimestepEmbedding", "UpsampleNearest",
        "MatMul", "Softmax", "Erf", "Sigmoid", "InstanceNormalization", "LayerNormalization", "Gemm", "Resize",
    ];

    [Theory]
    [InlineData("unet", "unet_opset17", "sample:2,4,16,16;timestep:2;encoder_hidden_states:2,77,32")]
    [InlineData("unet", "unet", "sample:2,4,16,16;timestep:2;encoder_hidden_states:2,77,32")]
    [InlineData("text_encoder", "text_encoder", "input_ids:2,77")]
    [InlineData("vae_decoder", "vae_decoder", "latent_sample:1,4,16,16")]
    [InlineData("vae_encoder", "vae_encoder", "sample:1,3,128,128")]
    public void PatternRecogniserFusesTheSameOpsAsInTheTorchExport(string ours, string torchExport, string shapes)
    {
        var s = shapes.Split(';').Select(p => p.Split(':')).ToDictionary(p => p[0], p => p[1].Split(',').Select(int.Parse).ToArray());
        Dictionary<string, int> Ops(string path)
        {
            var g = OnnxImporter.Load(path);
            try
            {
                GraphPasses.Prepare(g, s, fuse: true);
                return g.Nodes.GroupBy(n => n.Op).ToDictionary(x => x.Key, x => x.Count());
            }
            finally { foreach (var o in g.Owners) o.Dispose(); }
        }
        var a = Ops(Path.Combine(tiny.Folder, ours, "model.onnx"));
        var b = Ops(Fixtures.SdTiny(torchExport + "/model.onnx"));
        foreach (var op in FusedAndHeavyOps)
        {
            output.WriteLine($"{op,-22} built {a.GetValueOrDefault(op),4}  torch export {b.GetValueOrDefault(op),4}");
            Assert.Equal(b.GetValueOrDefault(op), a.GetValueOrDefault(op));
        }
        Assert.True(a.GetValueOrDefault("Attention") > 0);
    }
}
