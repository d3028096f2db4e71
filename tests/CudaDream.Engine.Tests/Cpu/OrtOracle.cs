using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Onnx;

namespace CudaDream.Engine.Tests.Cpu;

/// <summary>
/// Runs one ONNX operator in ONNX Runtime (CPU execution provider): an implementation we did not write,
/// used to pin down the forward semantics of the kernels (padding, groups, dilation, resize rounding).
/// </summary>
internal static class OrtOracle
{
    public sealed record Input(string Name, float[] Data, long[] Shape);

    public static float[] Run(string opType, IEnumerable<AttributeProto> attributes, IReadOnlyList<Input> inputs,
        IEnumerable<TensorProto>? constants = null, IReadOnlyList<string>? nodeInputs = null, int opset = 17)
    {
        var node = new NodeProto { OpType = opType, Name = opType };
        node.Input.AddRange(nodeInputs ?? inputs.Select(i => i.Name).ToList());
        node.Output.Add("y");
        node.Attribute.AddRange(attributes);
        var graph = new GraphProto { Name = "oracle" };
        graph.Node.Add(node);
        foreach (var input in inputs) graph.Input.Add(FloatValue(input.Name));
        graph.Output.Add(FloatValue("y"));
        if (constants != null) graph.Initializer.AddRange(constants);
        var model = new ModelProto { IrVersion = 8, Graph = graph, ProducerName = "CudaDream tests" };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = opset });

        using var options = new SessionOptions { IntraOpNumThreads = 1 };
        using var session = new InferenceSession(model.ToByteArray(), options);
        var values = inputs.Select(i => OrtValue.CreateTensorValueFromMemory(i.Data, i.Shape)).ToList();
        try
        {
            using var runOptions = new RunOptions();
            using var results = session.Run(runOptions, inputs.Select(i => i.Name).ToList(), values, new[] { "y" });
            return results[0].GetTensorDataAsSpan<float>().ToArray();
        }
        finally
        {
            foreach (var v in values) v.Dispose();
        }
    }

    public static AttributeProto Ints(string name, params long[] values)
    {
        var a = new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Ints };
        a.Ints.AddRange(values);
        return a;
    }

    public static AttributeProto Int(string name, long value) => new() { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = value };
    public static AttributeProto Float(string name, float value) => new() { Name = name, Type = AttributeProto.Types.AttributeType.Float, F = value };
    public static AttributeProto String(string name, string value) =>
        new() { Name = name, Type = AttributeProto.Types.AttributeType.String, S = ByteString.CopyFromUtf8(value) };

    public static TensorProto Int64Constant(string name, params long[] values)
    {
        var t = new TensorProto { Name = name, DataType = (int)TensorProto.Types.DataType.Int64 };
        t.Dims.Add(values.Length);
        t.Int64Data.AddRange(values);
        return t;
    }

    public static TensorProto FloatConstant(string name, float value) =>
        new() { Name = name, DataType = (int)TensorProto.Types.DataType.Float, FloatData = { value } };

    private static ValueInfoProto FloatValue(string name) => new()
    {
        Name = name,
        Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)TensorProto.Types.DataType.Float } },
    };
}
