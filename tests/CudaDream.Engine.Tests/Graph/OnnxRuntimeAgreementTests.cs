using CudaDream.Engine.Randomness;
using CudaDream.Engine.Tensors;
using CudaDream.TestSupport;
using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Xunit;
using OrtTensors = Microsoft.ML.OnnxRuntime.Tensors;

namespace CudaDream.Engine.Tests.Graph;

/// <summary>
/// The CPU engine agrees with ONNX Runtime (CPU EP) on the same graphs at shapes other than the traced
/// ones — specialisation and fusion must hold for any size, not just the fixture's.
/// </summary>
public class OnnxRuntimeAgreementTests
{
    private static Tensor RandomNormal(ulong seed, params int[] shape)
    {
        var data = new float[Shapes.Numel(shape)];
        CounterRng.FillNormal(data, seed, 0, RandomPurpose.Noise);
        return Tensor.FromArray(data, shape);
    }

    private static Dictionary<string, float[]> RunOrt(string modelPath, Dictionary<string, Tensor> inputs, IEnumerable<string> outputs)
    {
        using var options = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_DISABLE_ALL };
        using var session = new InferenceSession(modelPath, options);
        var feed = inputs.Select(kv => kv.Value.DType == DType.I32
            ? NamedOnnxValue.CreateFromTensor(kv.Key, new OrtTensors.DenseTensor<int>(kv.Value.ReadOnlySpan<int>().ToArray(), kv.Value.Shape))
            : NamedOnnxValue.CreateFromTensor(kv.Key, new OrtTensors.DenseTensor<float>(kv.Value.ToFloat32Array(), kv.Value.Shape))).ToList();
        using var results = session.Run(feed, outputs.ToList());
        return results.ToDictionary(r => r.Name, r => r.AsTensor<float>().ToArray());
    }

    private static void AssertAgree(string modelPath, Dictionary<string, Tensor> inputs, string[] outputs, string[]? extra = null)
    {
        var ort = RunOrt(modelPath, inputs, outputs.Concat(extra ?? Array.Empty<string>()));
        using var session = GraphSession.Create(modelPath, inputs.ToDictionary(kv => kv.Key, kv => kv.Value.Shape), new GraphSessionOptions { ExtraOutputs = extra ?? Array.Empty<string>() });
        var ours = session.Run(inputs);
        foreach (var name in outputs.Concat(extra ?? Array.Empty<string>()))
            TensorAssert.Close(ort[name], ours[name].ToFloat32Array(), 1e-4, $"{Path.GetFileName(Path.GetDirectoryName(modelPath))} {name}");
    }

    [Fact]
    public void UNetAtBatchOneNonSquareLatents()
    {
        var inputs = new Dictionary<string, Tensor>
        {
            ["sample"] = RandomNormal(1, 1, 4, 24, 16),
            ["timestep"] = Tensor.FromArray(new[] { 501f }, 1),
            ["encoder_hidden_states"] = RandomNormal(2, 1, 77, 32),
        };
        AssertAgree(Fixtures.SdTiny("unet/model.onnx"), inputs, new[] { "out_sample" });
        AssertAgree(Fixtures.SdTiny("unet_opset17/model.onnx"), inputs, new[] { "out_sample" });
    }

    [Fact]
    public void TextEncoderAtBatchOne()
    {
        var ids = new int[77];
        ids[0] = 998;
        for (int i = 1; i < 9; i++) ids[i] = (int)CounterRng.UniformInt(3, 0, RandomPurpose.Noise, i, 997) + 1;
        for (int i = 9; i < 77; i++) ids[i] = 999;
        var inputs = new Dictionary<string, Tensor> { ["input_ids"] = Tensor.FromArray(ids, 1, 77) };
        AssertAgree(Fixtures.SdTiny("text_encoder/model.onnx"), inputs, new[] { "last_hidden_state", "pooler_output" });
    }

    [Fact]
    public void VaeDecoderAtNonSquareLatents()
    {
        var inputs = new Dictionary<string, Tensor> { ["latent_sample"] = RandomNormal(4, 1, 4, 12, 20) };
        AssertAgree(Fixtures.SdTiny("vae_decoder/model.onnx"), inputs, new[] { "sample" });
    }

    /// <summary>The encoder's output is random in both engines; its moments (quant_conv output) are compared instead.</summary>
    [Fact]
    public void VaeEncoderMomentsAtNonSquareImage()
    {
        using var dir = Fixtures.TempDir();
        var model = Onnx.ModelProto.Parser.ParseFrom(File.ReadAllBytes(Fixtures.SdTiny("vae_encoder/model.onnx")));
        model.Graph.Output.Add(new Onnx.ValueInfoProto { Name = "/quant_conv/Conv_output_0" });
        var path = dir.File("vae_encoder.onnx");
        File.WriteAllBytes(path, model.ToByteArray());
        var image = new float[3 * 96 * 64];
        CounterRng.FillUniform(image, 5, 0, RandomPurpose.Noise);
        var inputs = new Dictionary<string, Tensor> { ["sample"] = Tensor.FromArray(image.Select(v => 2 * v - 1).ToArray(), 1, 3, 96, 64) };
        var ort = RunOrt(path, inputs, new[] { "/quant_conv/Conv_output_0" });
        using var session = GraphSession.Create(path, new Dictionary<string, int[]> { ["sample"] = new[] { 1, 3, 96, 64 } });
        var ours = session.Run(inputs);
        TensorAssert.Close(ort["/quant_conv/Conv_output_0"], ours["/quant_conv/Conv_output_0"].ToFloat32Array(), 1e-4, "moments");
    }
}
