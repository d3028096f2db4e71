using CudaDream.Diffusion.Models.Builder;
using CudaDream.Engine.Tensors;
using CudaDream.TestSupport;
using Onnx;
using Xunit;
using Xunit.Abstractions;

namespace CudaDream.Diffusion.Tests.Models;

/// <summary>
/// The SD 1.5 config builds the same UNet as diffusers 0.21.4 exported by PyTorch
/// (tests/fixtures/sd15-structure): same parameters, same weight-bearing nodes under the same module paths.
/// Built shape-only (no weights), so the test takes a fraction of a second.
/// </summary>
public sealed class Sd15StructureTests(ITestOutputHelper output)
{
    private static ModelProto Reference() =>
        ModelProto.Parser.ParseFrom(File.ReadAllBytes(Fixtures.Path("sd15-structure/unet/model.onnx")));

    [Fact]
    public void Sd15UNetHasDiffusersParameterCountAndWeights()
    {
        var reference = Reference().Graph;
        long referenceParams = reference.Initializer.Sum(t => t.Dims.Aggregate(1L, (a, d) => a * d));
        Assert.Equal(686, reference.Initializer.Count);
        Assert.Equal(859_520_964, referenceParams);

        var built = UNetGraph.Build(UNetConfig.Sd15, weights: null);
        output.WriteLine($"built: {built.Initializers.Count} initializers, {built.ParameterCount:N0} parameters, {built.Model.Graph.Node.Count} nodes");
        Assert.Equal(686, built.Initializers.Count);
        Assert.Equal(referenceParams, built.ParameterCount);

        // Every reference initializer, whatever the exporter called it, is one of ours: named ones by name and
        // shape; the exporter's folded copies (onnx::MatMul_N = Wᵀ, onnx::Mul_N / onnx::Add_N = γ, β as [C,1,1])
        // through the module path of the node that consumes them.
        var ours = built.Initializers.ToDictionary(i => i.Name, i => i.Shape);
        var consumer = new Dictionary<string, NodeProto>();
        foreach (var n in reference.Node) foreach (var i in n.Input) consumer.TryAdd(i, n);
        var matched = new HashSet<string>();
        foreach (var t in reference.Initializer)
        {
            var shape = t.Dims.Select(d => (int)d).ToArray();
            string key;
            int[] expected;
            if (!t.Name.StartsWith("onnx::", StringComparison.Ordinal)) { key = t.Name; expected = shape; }
            else
            {
                var node = consumer[t.Name];
                var module = ModulePath(node.Name);
                (key, expected) = node.OpType switch
                {
                    "MatMul" => (module + ".weight", new[] { shape[1], shape[0] }),
                    "Mul" => (module + ".weight", new[] { shape[0] }),
                    "Add" => (module + ".bias", new[] { shape[0] }),
                    _ => throw new Xunit.Sdk.XunitException($"unexpected consumer {node.OpType} {node.Name} of {t.Name}"),
                };
            }
            Assert.True(ours.TryGetValue(key, out var ourShape), $"reference {t.Name} → {key} not built");
            Assert.True(Shapes.Equal(expected, ourShape), $"{key}: built {Shapes.Format(ourShape)}, reference {Shapes.Format(expected)}");
            Assert.True(matched.Add(key), $"{key} matched twice");
        }
        Assert.Equal(686, matched.Count);
    }

    [Fact]
    public void Sd15UNetHasTheSameWeightBearingNodesAndPatterns()
    {
        var reference = Reference().Graph;
        var builtGraph = UNetGraph.Build(UNetConfig.Sd15, weights: null);
        var built = builtGraph.Model.Graph;
        var builtWeights = builtGraph.Initializers.Select(i => i.Name).ToHashSet();

        // Conv, Gemm and weight MatMul nodes carry the module path in their names in both graphs.
        var refInits = reference.Initializer.Select(i => i.Name).ToHashSet();
        // ours: MatMul(x, Transpose(W)) with W an initializer
        var ourInits = built.Node.Where(n => n.OpType == "Transpose" && builtWeights.Contains(n.Input[0])).Select(n => n.Output[0]).ToHashSet();
        static bool IsWeightOp(NodeProto n, HashSet<string> weights) =>
            n.OpType is "Conv" or "Gemm" || (n.OpType == "MatMul" && weights.Contains(n.Input[1]));
        var refNames = reference.Node.Where(n => IsWeightOp(n, refInits)).Select(n => $"{n.OpType} {n.Name}").Order().ToList();
        var ourNames = built.Node.Where(n => IsWeightOp(n, ourInits)).Select(n => $"{n.OpType} {n.Name}").Order().ToList();
        output.WriteLine($"weight-bearing nodes: reference {refNames.Count}, built {ourNames.Count}");
        Assert.Equal(refNames, ourNames);

        // The patterns the engine fuses appear as often as in the torch export.
        foreach (var op in new[] { "InstanceNormalization", "Softmax", "Erf", "Resize", "Sin", "Cos", "Sigmoid", "Conv", "Gemm" })
        {
            int r = reference.Node.Count(n => n.OpType == op), b = built.Node.Count(n => n.OpType == op);
            output.WriteLine($"{op}: reference {r}, built {b}");
            Assert.Equal(r, b);
        }
        // opset-14 LayerNorm (ReduceMean … Div) becomes one LayerNormalization per norm at opset 17.
        Assert.Equal(reference.Node.Count(n => n.OpType == "Pow"), built.Node.Count(n => n.OpType == "LayerNormalization"));
    }

    /// <summary>"/down_blocks.0/attentions.0/transformer_blocks.0/attn1/to_q/MatMul" → "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q".</summary>
    private static string ModulePath(string nodeName)
    {
        var parts = nodeName.Trim('/').Split('/');
        return string.Join('.', parts[..^1]);
    }
}

public sealed class Sd15ParameterCountTests
{
    /// <summary>Published sizes: CLIP ViT-L/14 text model 123,060,480 parameters; SD's AutoencoderKL 83,653,863.</summary>
    [Fact]
    public void Sd15TextEncoderAndVaeHaveTheirPublishedSizes()
    {
        Assert.Equal(123_060_480, ClipTextGraph.Build(ClipTextConfig.Sd15, null).ParameterCount);
        long vae = VaeGraphs.BuildEncoder(VaeConfig.Sd15, null).ParameterCount + VaeGraphs.BuildDecoder(VaeConfig.Sd15, null).ParameterCount;
        Assert.Equal(83_653_863, vae);
    }
}
