using CudaDream.Engine.Formats;
using CudaDream.Engine.Tensors;
using CudaDream.TestSupport;
using Google.Protobuf;
using Onnx;
using Xunit;

namespace CudaDream.Engine.Tests.Graph;

/// <summary>
/// [E1] Fusion is an optimisation, never a requirement: exporter variants the recogniser does not match
/// run unfused and still reproduce the PyTorch reference. Each variant is the fixture UNet edited the way
/// another exporter writes it.
/// </summary>
public class FusionVariantTests
{
    private static readonly Dictionary<string, Tensor> Refs = SafetensorsFile.ReadAll(Fixtures.SdTiny("refs/unet.safetensors"));

    private static (Dictionary<string, Tensor> outputs, IReadOnlyDictionary<string, int> ops) Run(TempDir dir, ModelProto model, Dictionary<string, Tensor> inputs)
    {
        // The edited graph keeps reading the fixture's external weights.
        File.Copy(Fixtures.SdTiny("unet/weights.pb"), dir.File("weights.pb"), overwrite: true);
        var path = dir.File("model.onnx");
        File.WriteAllBytes(path, model.ToByteArray());
        using var s = GraphSession.Create(path, inputs.ToDictionary(kv => kv.Key, kv => kv.Value.Shape));
        return (s.Run(inputs), s.Graph.OpHistogram());
    }

    private static ModelProto Fixture() => ModelProto.Parser.ParseFrom(File.ReadAllBytes(Fixtures.SdTiny("unet/model.onnx")));

    private static Dictionary<string, Tensor> Inputs() => new()
    {
        ["sample"] = Refs["sample"], ["timestep"] = Refs["timestep"], ["encoder_hidden_states"] = Refs["encoder_hidden_states"],
    };

    [Fact]
    public void Int64Timesteps()
    {
        using var dir = Fixtures.TempDir();
        var model = Fixture();
        model.Graph.Input.First(i => i.Name == "timestep").Type.TensorType.ElemType = 7; // INT64
        var inputs = Inputs();
        inputs["timestep"] = Refs["timestep"].To(DType.I64);
        var (o, ops) = Run(dir, model, inputs);
        TensorAssert.Close(Refs["out_sample"], o["out_sample"], 1e-4, "out_sample");
        // The int64 → float Cast sits inside the sinusoidal pattern, so it runs unfused.
        Assert.False(ops.ContainsKey("TimestepEmbedding"));
        Assert.Equal(22, ops["Attention"]);
    }

    [Fact]
    public void IdentityNodesSharingInitializers()
    {
        using var dir = Fixtures.TempDir();
        var model = Fixture();
        // torch's exporter inserts Identity nodes when it deduplicates equal initializers: route every MatMul weight through one.
        int added = 0;
        foreach (var mm in model.Graph.Node.Where(n => n.OpType == "MatMul" && model.Graph.Initializer.Any(i => i.Name == n.Input[1])).ToList())
        {
            var id = new NodeProto { OpType = "Identity", Name = $"/identity_{added++}" };
            id.Input.Add(mm.Input[1]);
            id.Output.Add(mm.Input[1] + "/identity");
            mm.Input[1] = id.Output[0];
            model.Graph.Node.Insert(model.Graph.Node.IndexOf(mm), id);
        }
        Assert.Equal(154 - 22 * 2, added);
        var (o, ops) = Run(dir, model, Inputs());
        TensorAssert.Close(Refs["out_sample"], o["out_sample"], 1e-4, "out_sample");
        Assert.False(ops.ContainsKey("Identity"));
    }

    [Fact]
    public void OptimumSquareRootScaleOnQueryAndKey()
    {
        using var dir = Fixtures.TempDir();
        var model = Fixture();
        // Optimum scales q and k by √scale each instead of the scores by scale.
        int edited = 0;
        foreach (var mul in model.Graph.Node.Where(n => n.OpType == "Mul" && n.Name.EndsWith("/Mul_3") && n.Name.Contains("/attn")).ToList())
        {
            var qk = model.Graph.Node.First(n => n.Output.Contains(mul.Input[0]));
            var scale = mul.Input[1];
            var scaleNode = model.Graph.Node.First(n => n.Output.Contains(scale));
            float s = BitConverter.ToSingle(scaleNode.Attribute[0].T.RawData.ToByteArray());
            var sqrt = new NodeProto { OpType = "Constant", Name = mul.Name + "/sqrt" };
            sqrt.Output.Add(mul.Name + "/sqrt_output");
            var t = new TensorProto { DataType = 1, RawData = ByteString.CopyFrom(BitConverter.GetBytes(MathF.Sqrt(s))) };
            sqrt.Attribute.Add(new AttributeProto { Name = "value", Type = AttributeProto.Types.AttributeType.Tensor, T = t });
            int at = model.Graph.Node.IndexOf(qk);
            model.Graph.Node.Insert(at, sqrt);
            for (int side = 0; side < 2; side++)
            {
                var m = new NodeProto { OpType = "Mul", Name = $"{mul.Name}/scale_{side}" };
                m.Input.Add(qk.Input[side]);
                m.Input.Add(sqrt.Output[0]);
                m.Output.Add($"{mul.Name}/scaled_{side}");
                qk.Input[side] = m.Output[0];
                model.Graph.Node.Insert(model.Graph.Node.IndexOf(qk), m);
            }
            // The scores now skip the original Mul.
            foreach (var consumer in model.Graph.Node.Where(n => n.Input.Contains(mul.Output[0])))
                for (int i = 0; i < consumer.Input.Count; i++) if (consumer.Input[i] == mul.Output[0]) consumer.Input[i] = mul.Input[0];
            model.Graph.Node.Remove(mul);
            edited++;
        }
        Assert.Equal(22, edited);
        var (o, ops) = Run(dir, model, Inputs());
        TensorAssert.Close(Refs["out_sample"], o["out_sample"], 1e-4, "out_sample");
        Assert.False(ops.ContainsKey("Attention"));
        Assert.Equal(22, ops["Softmax"]);
    }

    [Fact]
    public void HalfPrecisionConstantsStillFuseGelu()
    {
        using var dir = Fixtures.TempDir();
        var model = Fixture();
        // A model stored in fp16 (an fp16 import, diffusers' fp16 ONNX) carries GELU's √2 as 1.4140625: widened on load it
        // is 1.4e-4 off, and a recogniser that wants √2 to 1e-5 left all 11 GEGLUs of the tiny UNet unfused (16 in SD 1.5).
        int rounded = 0;
        foreach (var erf in model.Graph.Node.Where(n => n.OpType == "Erf").ToList())
        {
            var div = model.Graph.Node.First(n => n.Output.Contains(erf.Input[0]));
            var constant = model.Graph.Node.First(n => n.Output.Contains(div.Input[1]));
            var t = constant.Attribute[0].T;
            float half = (float)(Half)BitConverter.ToSingle(t.RawData.ToByteArray());
            t.RawData = ByteString.CopyFrom(BitConverter.GetBytes(half));
            rounded++;
        }
        Assert.Equal(11, rounded);
        var (o, ops) = Run(dir, model, Inputs());
        Assert.Equal(11, ops["Geglu"]);
        Assert.False(ops.ContainsKey("Erf"));
        TensorAssert.Close(Refs["out_sample"], o["out_sample"], 1e-4, "out_sample");
    }
}
