using CudaDream.Diffusion.Models.Builder;
using CudaDream.Engine;
using CudaDream.Engine.Autodiff;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Randomness;
using CudaDream.Engine.Tensors;
using CudaDream.Engine.Training;
using CudaDream.Engine.Training.Lora;
using CudaDream.TestSupport;
using Microsoft.ML.OnnxRuntime;
using Xunit;
using OrtTensors = Microsoft.ML.OnnxRuntime.Tensors;

namespace CudaDream.Diffusion.Tests.Models;

/// <summary>
/// The engine is built for the SD 1.x family, not for the fixture: SD-family networks with other widths,
/// head counts (and head widths), norm groups, cross-attention width, linear projections, GELU text layers,
/// vocabulary and non-square, non-traced sizes run fused on the CPU engine and agree with ONNX Runtime on the
/// same graph; their LoRA gradients agree with the unfused graph's.
/// </summary>
public class UnseenArchitectureTests
{
    private static readonly UNetConfig UNet = new()
    {
        BlockOutChannels = [24, 48, 48],
        DownBlockTypes = ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        UpBlockTypes = ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        LayersPerBlock = 1, AttentionHeads = [3, 6, 6], CrossAttentionDim = 40, NormGroups = 6, UseLinearProjection = true,
    };

    private static readonly ClipTextConfig Text = new()
    {
        VocabSize = 600, HiddenSize = 48, IntermediateSize = 96, NumLayers = 2, NumHeads = 6, HiddenAct = "gelu",
        BosTokenId = 598, EosTokenId = 599, PadTokenId = 599, ProjectionDim = 48,
    };

    private static readonly VaeConfig Vae = new() { BlockOutChannels = [16, 24, 24], LayersPerBlock = 1, NormGroups = 8 };

    /// <summary>Builds a network with random weights (N(0, 1)/√fan-in, norms near 1) and writes it.</summary>
    private static string Write(TempDir dir, string name, Func<IWeightSource?, BuiltGraph> build)
    {
        var shapes = build(null).Initializers;
        var weights = new Dictionary<string, Tensor>();
        ulong seed = 1;
        foreach (var i in shapes)
        {
            var data = new float[Shapes.Numel(i.Shape)];
            CounterRng.FillNormal(data, seed++, 0, RandomPurpose.Noise);
            float scale = i.Shape.Length >= 2 ? 1f / MathF.Sqrt(data.Length / i.Shape[0]) : 0.1f;
            bool norm = i.Name.Contains("norm") && i.Name.EndsWith(".weight");
            for (int k = 0; k < data.Length; k++) data[k] = (norm ? 1 : 0) + scale * data[k];
            weights[i.Name] = Tensor.FromArray(data, i.Shape);
        }
        var path = dir.File(name + ".onnx");
        build(new DictionaryWeights(weights)).Save(path);
        return path;
    }

    private static Tensor Random(ulong seed, params int[] shape)
    {
        var d = new float[Shapes.Numel(shape)];
        CounterRng.FillNormal(d, seed, 0, RandomPurpose.Noise);
        return Tensor.FromArray(d, shape);
    }

    private static void AgreesWithOrt(string path, Dictionary<string, Tensor> inputs, string output, int expectedAttention)
    {
        using var options = new SessionOptions();
        using var ort = new InferenceSession(path, options);
        var feed = inputs.Select(kv => kv.Value.DType == DType.I32
            ? NamedOnnxValue.CreateFromTensor(kv.Key, new OrtTensors.DenseTensor<int>(kv.Value.ReadOnlySpan<int>().ToArray(), kv.Value.Shape))
            : NamedOnnxValue.CreateFromTensor(kv.Key, new OrtTensors.DenseTensor<float>(kv.Value.ToFloat32Array(), kv.Value.Shape))).ToList();
        using var results = ort.Run(feed, new[] { output });
        var expected = results.First().AsTensor<float>().ToArray();
        using var session = GraphSession.Create(path, inputs.ToDictionary(kv => kv.Key, kv => kv.Value.Shape));
        Assert.Equal(expectedAttention, session.Graph.OpHistogram().GetValueOrDefault("Attention"));
        TensorAssert.Close(expected, session.Run(inputs)[output].ToFloat32Array(), 1e-4, Path.GetFileName(path));
    }

    [Fact]
    public void UNetWithOtherWidthsHeadsAndLinearProjections()
    {
        using var dir = Fixtures.TempDir();
        var path = Write(dir, "unet", w => UNetGraph.Build(UNet, w));
        // Non-square latents that are no multiple of the traced 16, batch 3, a 20-token context.
        AgreesWithOrt(path, new Dictionary<string, Tensor>
        {
            ["sample"] = Random(1, 3, 4, 24, 40), ["timestep"] = Tensor.FromArray(new[] { 1f, 500f, 999f }, 3),
            ["encoder_hidden_states"] = Random(2, 3, 20, 40),
        }, "out_sample", expectedAttention: 2 * (2 * 1 + 1 + 2 * 2)); // (down + mid + up transformers) × (attn1, attn2)
    }

    [Fact]
    public void TextEncoderWithOtherVocabularyAndGelu()
    {
        using var dir = Fixtures.TempDir();
        var path = Write(dir, "text", w => ClipTextGraph.Build(Text, w));
        var ids = new int[2 * 77];
        for (int r = 0; r < 2; r++)
        {
            ids[r * 77] = 598;
            for (int i = 1; i < 77; i++) ids[r * 77 + i] = i < 6 + 9 * r ? 1 + (i * 37 + r) % 590 : 599;
        }
        AgreesWithOrt(path, new Dictionary<string, Tensor> { ["input_ids"] = Tensor.FromArray(ids, 2, 77) }, "last_hidden_state", expectedAttention: 2);
    }

    [Fact]
    public void VaeWithOtherWidths()
    {
        using var dir = Fixtures.TempDir();
        var path = Write(dir, "decoder", w => VaeGraphs.BuildDecoder(Vae, w));
        AgreesWithOrt(path, new Dictionary<string, Tensor> { ["latent_sample"] = Random(3, 1, 4, 6, 10) }, "sample", expectedAttention: 1);
    }

    /// <summary>LoRA gradients through the fused variant equal those through the unfused graph (two different paths through the rule table).</summary>
    [Fact]
    public void LoraGradientsFusedEqualUnfused()
    {
        using var dir = Fixtures.TempDir();
        var path = Write(dir, "unet", w => UNetGraph.Build(UNet, w));
        var inputs = new Dictionary<string, Tensor>
        {
            ["sample"] = Random(4, 2, 4, 8, 16), ["timestep"] = Tensor.FromArray(new[] { 10f, 700f }, 2),
            ["encoder_hidden_states"] = Random(5, 2, 9, 40), ["target"] = Random(6, 2, 4, 8, 16),
        };
        var lora = dir.File("lora.safetensors");
        Dictionary<string, Tensor> Grad(bool fuse)
        {
            var request = new GraphGradientRequest { Model = path, Tensors = inputs, Target = "target", Wrt = new[] { "*.to_k.weight", "sample" }, Fuse = fuse };
            return GraphGradient.Run(request);
        }
        var fused = Grad(true);
        var unfused = Grad(false);
        Assert.True(fused.Keys.Count(k => k.EndsWith(".grad")) > 5);
        foreach (var (k, t) in fused) TensorAssert.Close(unfused[k], t, 1e-4, k);
    }
}
