using CudaDream.Engine.Formats;
using CudaDream.Engine.Tensors;
using Onnx;

namespace CudaDream.Engine.Graph;

/// <summary>
/// Turns an ONNX model into the engine's graph IR: initializers become weight values (viewing the
/// model's memory), <c>Constant</c> nodes become constant values, everything else becomes a node.
/// Symbolic dimensions become -1 until <see cref="Specializer"/> gives them values.
/// </summary>
public static class OnnxImporter
{
    public const int MinOpset = 13;
    public const int MaxOpset = 21;

    /// <summary>Loads an .onnx file (with external data) and imports it. The graph owns the model's memory maps.</summary>
    public static ComputeGraph Load(string path, bool loadExternalData = true)
    {
        var model = loadExternalData ? OnnxModel.Load(path) : OnnxModel.LoadForInspection(path);
        try
        {
            var g = Import(model);
            g.Owners.Add(model);
            return g;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    public static ComputeGraph Import(OnnxModel model)
    {
        var path = model.Path;
        if (model.Opset < MinOpset || model.Opset > MaxOpset)
            throw new InvalidFileException(path, $"opset {model.Opset} is not supported (supported: {MinOpset}-{MaxOpset})");
        var g = new ComputeGraph { Opset = model.Opset, Source = path };
        var values = new Dictionary<string, Value>(StringComparer.Ordinal);
        var graph = model.Proto.Graph;

        foreach (var (name, info) in model.InitializerInfo)
        {
            var v = new Value(name, info.DType, info.Shape)
            {
                IsWeight = true,
                Constant = model.Initializers.TryGetValue(name, out var t) ? t : null,
            };
            values[name] = v;
            g.Weights[name] = v;
        }

        foreach (var input in graph.Input)
        {
            if (values.ContainsKey(input.Name)) continue; // IR < 4 lists initializers as inputs too
            var (dtype, shape) = ValueType(path, input);
            var v = new Value(input.Name, dtype, shape);
            values[input.Name] = v;
            g.Inputs.Add(v);
        }

        // Shapes the exporter recorded for intermediate values are not trusted; specialisation recomputes them.
        int anonymous = 0;
        foreach (var np in graph.Node)
        {
            if (np.Domain is not ("" or "ai.onnx"))
                throw new InvalidFileException(path, $"node '{np.Name}': operator domain '{np.Domain}' ({np.OpType}) is not supported");
            var nodeName = string.IsNullOrEmpty(np.Name) ? $"{np.OpType}_{anonymous++}" : np.Name;
            var attrs = ConvertAttributes(path, nodeName, np);
            if (np.OpType == "Constant")
            {
                var c = ConstantValue(path, nodeName, attrs);
                if (np.Output.Count != 1) throw new InvalidFileException(path, $"node '{nodeName}': Constant must have one output");
                var cv = new Value(np.Output[0], c.DType, c.Shape) { Constant = c };
                values[np.Output[0]] = cv;
                continue;
            }
            var inputs = new List<Value?>();
            foreach (var iname in np.Input)
            {
                if (string.IsNullOrEmpty(iname)) { inputs.Add(null); continue; }
                if (!values.TryGetValue(iname, out var iv))
                    throw new InvalidFileException(path, $"node '{nodeName}' ({np.OpType}) reads '{iname}', which no earlier node produces (the graph is not topologically sorted or is incomplete)");
                inputs.Add(iv);
            }
            var outputs = new List<Value>();
            foreach (var oname in np.Output)
            {
                if (string.IsNullOrEmpty(oname)) { outputs.Add(new Value($"{nodeName}/unused{outputs.Count}", DType.F32, null)); continue; }
                if (values.ContainsKey(oname)) throw new InvalidFileException(path, $"node '{nodeName}': value '{oname}' is produced twice");
                var ov = new Value(oname, DType.F32, null);
                values[oname] = ov;
                outputs.Add(ov);
            }
            g.AddNode(new Node(np.OpType, nodeName, inputs, outputs, attrs));
        }

        foreach (var output in graph.Output)
        {
            if (!values.TryGetValue(output.Name, out var v))
                throw new InvalidFileException(path, $"graph output '{output.Name}' is produced by no node");
            g.Outputs.Add(v);
        }
        return g;
    }

    private static (DType, int[]?) ValueType(string path, ValueInfoProto vi)
    {
        var tt = vi.Type?.TensorType ?? throw new InvalidFileException(path, $"input '{vi.Name}' is not a tensor");
        if (!DTypes.TryFromOnnx(tt.ElemType, out var dtype))
            throw new InvalidFileException(path, $"input '{vi.Name}' has unsupported element type {tt.ElemType}");
        if (tt.Shape == null) return (dtype, null);
        var shape = tt.Shape.Dim.Select(d => d.ValueCase == TensorShapeProto.Types.Dimension.ValueOneofCase.DimValue ? checked((int)d.DimValue) : -1).ToArray();
        return (dtype, shape);
    }

    private static Attributes ConvertAttributes(string path, string nodeName, NodeProto np)
    {
        var a = new Attributes();
        foreach (var at in np.Attribute)
        {
            switch (at.Type)
            {
                case AttributeProto.Types.AttributeType.Int: a.Set(at.Name, at.I); break;
                case AttributeProto.Types.AttributeType.Float: a.Set(at.Name, at.F); break;
                case AttributeProto.Types.AttributeType.String: a.Set(at.Name, at.S.ToStringUtf8()); break;
                case AttributeProto.Types.AttributeType.Ints: a.Set(at.Name, at.Ints.ToArray()); break;
                case AttributeProto.Types.AttributeType.Floats: a.Set(at.Name, at.Floats.ToArray()); break;
                case AttributeProto.Types.AttributeType.Tensor:
                    {
                        var (dt, shape) = OnnxModel.TensorInfo(path, at.T);
                        if (at.T.DataLocation == TensorProto.Types.DataLocation.External)
                            throw new InvalidFileException(path, $"node '{nodeName}': tensor attribute '{at.Name}' with external data is not supported");
                        a.Set(at.Name, OnnxModel.ReadInline(path, at.T, dt, shape));
                        break;
                    }
                case AttributeProto.Types.AttributeType.Graph or AttributeProto.Types.AttributeType.Graphs:
                    throw new InvalidFileException(path, $"node '{nodeName}' ({np.OpType}): subgraphs (control flow) are not supported");
                default:
                    a.Set(at.Name, at.Type.ToString()); // kept for messages; no supported op reads it
                    break;
            }
        }
        return a;
    }

    private static Tensor ConstantValue(string path, string nodeName, Attributes a)
    {
        if (a.Tensor("value") is { } t) return t;
        if (a.Has("value_float")) return Tensor.FromArray(new[] { a.Float("value_float", 0) }, Array.Empty<int>());
        if (a.Floats("value_floats") is { } fs) return Tensor.FromArray(fs, fs.Length);
        if (a.Has("value_int")) return Tensor.FromArray(new[] { a.Int("value_int") }, Array.Empty<int>());
        if (a.Ints("value_ints") is { } ls) return Tensor.FromArray(ls, ls.Length);
        throw new InvalidFileException(path, $"node '{nodeName}': Constant without a supported value attribute");
    }
}
