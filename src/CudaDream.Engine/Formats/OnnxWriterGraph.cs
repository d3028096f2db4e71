using CudaDream.Engine.Tensors;
using Google.Protobuf;
using Onnx;

namespace CudaDream.Engine.Formats;

/// <summary>An ONNX attribute value for <see cref="OnnxGraphBuilder.Op"/>: long, float, string, long[], float[] or a Tensor.</summary>
public readonly record struct OnnxAttribute(string Name, object Value);

/// <summary>
/// Builds an ONNX graph the way PyTorch's exporter names it, so that a graph we emit reads like the
/// reference exports: inside module scope <c>down_blocks.0.attentions.0</c> a node is named
/// <c>/down_blocks.0/attentions.0/MatMul</c> (then <c>MatMul_1</c>, …) and its output
/// <c>/down_blocks.0/attentions.0/MatMul_output_0</c>. Initializers keep the names they are given
/// (state-dict keys). Dimensions are either fixed (int) or symbolic (string).
/// </summary>
public sealed class OnnxGraphBuilder
{
    private readonly List<string> _scope = new();
    private readonly Dictionary<string, int> _opCounts = new(StringComparer.Ordinal);
    private readonly List<NodeProto> _nodes = new();
    private readonly List<OnnxInitializer> _initializers = new();
    private readonly HashSet<string> _initializerNames = new(StringComparer.Ordinal);
    private readonly List<ValueInfoProto> _inputs = new();
    private readonly List<(string Name, string Value, DType DType, object[] Dims)> _outputs = new();

    public string GraphName { get; }

    public OnnxGraphBuilder(string graphName) => GraphName = graphName;

    public IReadOnlyList<OnnxInitializer> Initializers => _initializers;
    public IReadOnlyList<NodeProto> Nodes => _nodes;

    /// <summary>Enters a module scope (e.g. "down_blocks.0" or "attn1"); dispose to leave it.</summary>
    public IDisposable Scope(string module)
    {
        foreach (var part in SplitModulePath(module)) _scope.Add(part);
        int pushed = SplitModulePath(module).Count;
        return new ScopeExit(() => _scope.RemoveRange(_scope.Count - pushed, pushed));
    }

    /// <summary>The torch exporter's scope parts: "a.b.0.c" → ["a", "b.0", "c"] (list indices stay joined to their parent).</summary>
    public static List<string> SplitModulePath(string path)
    {
        var parts = new List<string>();
        foreach (var p in path.Split('.', StringSplitOptions.RemoveEmptyEntries))
        {
            if (parts.Count > 0 && p.All(char.IsAsciiDigit)) parts[^1] += "." + p;
            else parts.Add(p);
        }
        return parts;
    }

    /// <summary>The current module path, dot-separated ("down_blocks.0.attentions.0").</summary>
    public string ModulePath => string.Join(".", _scope);

    public void AddInput(string name, DType dtype, params object[] dims) => _inputs.Add(ValueInfo(name, dtype, dims));

    /// <summary>Declares graph output <paramref name="name"/> as the value <paramref name="value"/> (which is renamed to it).</summary>
    public void AddOutput(string name, string value, DType dtype, params object[] dims) => _outputs.Add((name, value, dtype, dims));

    /// <summary>Registers a weight under its own name; returns the name. Float data of another float type is converted when written.</summary>
    public string AddInitializer(string name, DType dtype, int[] shape, Tensor? data)
    {
        if (!_initializerNames.Add(name)) throw new ArgumentException($"initializer '{name}' added twice");
        if (data != null && (!Shapes.Equal(data.Shape, shape) || (data.DType != dtype && !(data.DType.IsFloat() && dtype.IsFloat()))))
            throw new ArgumentException($"initializer '{name}': data {data} does not match {dtype}{Shapes.Format(shape)}");
        _initializers.Add(new OnnxInitializer(name, dtype, shape, data));
        return name;
    }

    public bool HasInitializer(string name) => _initializerNames.Contains(name);

    /// <summary>Adds a node in the current scope; returns its output names (<c>&lt;node&gt;_output_i</c>).</summary>
    public string[] Op(string opType, IReadOnlyList<string> inputs, int outputs, params OnnxAttribute[] attributes)
    {
        string prefix = _scope.Count == 0 ? "/" : "/" + string.Join("/", _scope) + "/";
        string key = prefix + opType;
        _opCounts.TryGetValue(key, out int n);
        _opCounts[key] = n + 1;
        string name = n == 0 ? key : $"{key}_{n}";
        var node = new NodeProto { Name = name, OpType = opType };
        node.Input.AddRange(inputs);
        var outs = new string[outputs];
        for (int i = 0; i < outputs; i++) outs[i] = $"{name}_output_{i}";
        node.Output.AddRange(outs);
        foreach (var a in attributes) node.Attribute.Add(Attribute(a));
        _nodes.Add(node);
        return outs;
    }

    /// <summary>A single-output node.</summary>
    public string Op(string opType, params string[] inputs) => Op(opType, inputs, 1)[0];

    public string Op(string opType, string[] inputs, params OnnxAttribute[] attributes) => Op(opType, inputs, 1, attributes)[0];

    /// <summary>A Constant node holding <paramref name="value"/> in the current scope.</summary>
    public string Constant(Tensor value) => Op("Constant", Array.Empty<string>(), 1, new OnnxAttribute("value", value))[0];

    public string ConstantInt64(params long[] values) => Constant(Tensor.FromArray(values, values.Length));

    /// <summary>A rank-0 float constant of the given element type.</summary>
    public string ConstantScalar(float value, DType dtype) => Constant(Tensor.FromArray(new[] { value }, Array.Empty<int>()).To(dtype));

    /// <summary>The finished model: nodes, inputs and outputs; initializers are returned separately (see <see cref="OnnxWriter"/>).</summary>
    public ModelProto ToModel(int opset, string producer = "CudaDream")
    {
        var graph = new GraphProto { Name = GraphName };
        var rename = _outputs.ToDictionary(o => o.Value, o => o.Name, StringComparer.Ordinal);
        foreach (var node in _nodes)
        {
            var copy = node.Clone();
            for (int i = 0; i < copy.Output.Count; i++) if (rename.TryGetValue(copy.Output[i], out var r)) copy.Output[i] = r;
            for (int i = 0; i < copy.Input.Count; i++) if (rename.TryGetValue(copy.Input[i], out var r)) copy.Input[i] = r;
            graph.Node.Add(copy);
        }
        graph.Input.AddRange(_inputs);
        foreach (var o in _outputs) graph.Output.Add(ValueInfo(o.Name, o.DType, o.Dims));
        return OnnxWriter.NewModel(graph, opset, producer);
    }

    private static ValueInfoProto ValueInfo(string name, DType dtype, object[] dims)
    {
        var shape = new TensorShapeProto();
        foreach (var d in dims)
        {
            var dim = new TensorShapeProto.Types.Dimension();
            if (d is string s) dim.DimParam = s;
            else dim.DimValue = Convert.ToInt64(d);
            shape.Dim.Add(dim);
        }
        return new ValueInfoProto
        {
            Name = name,
            Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = dtype.ToOnnx(), Shape = shape } },
        };
    }

    private static AttributeProto Attribute(OnnxAttribute a)
    {
        var p = new AttributeProto { Name = a.Name };
        switch (a.Value)
        {
            case int i: p.Type = AttributeProto.Types.AttributeType.Int; p.I = i; break;
            case long l: p.Type = AttributeProto.Types.AttributeType.Int; p.I = l; break;
            case float f: p.Type = AttributeProto.Types.AttributeType.Float; p.F = f; break;
            case double d: p.Type = AttributeProto.Types.AttributeType.Float; p.F = (float)d; break;
            case string s: p.Type = AttributeProto.Types.AttributeType.String; p.S = ByteString.CopyFromUtf8(s); break;
            case long[] ls: p.Type = AttributeProto.Types.AttributeType.Ints; p.Ints.AddRange(ls); break;
            case int[] ints: p.Type = AttributeProto.Types.AttributeType.Ints; p.Ints.AddRange(ints.Select(x => (long)x)); break;
            case float[] fs: p.Type = AttributeProto.Types.AttributeType.Floats; p.Floats.AddRange(fs); break;
            case Tensor t: p.Type = AttributeProto.Types.AttributeType.Tensor; p.T = TensorProtoOf(t); break;
            default: throw new ArgumentException($"attribute '{a.Name}': unsupported value type {a.Value?.GetType().Name}");
        }
        return p;
    }

    /// <summary>An inline TensorProto (raw little-endian bytes).</summary>
    public static TensorProto TensorProtoOf(Tensor t, string name = "")
    {
        var p = new TensorProto { Name = name, DataType = t.DType.ToOnnx(), RawData = ByteString.CopyFrom(t.Data.Span) };
        p.Dims.AddRange(t.Shape.Select(d => (long)d));
        return p;
    }

    private sealed class ScopeExit(Action exit) : IDisposable
    {
        private bool _done;
        public void Dispose() { if (!_done) { _done = true; exit(); } }
    }
}
