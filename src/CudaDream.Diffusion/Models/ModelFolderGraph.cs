using System.Text.RegularExpressions;
using CudaDream.Engine;
using CudaDream.Engine.Formats;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Tensors;
using Onnx;

namespace CudaDream.Diffusion.Models;

/// <summary>One graph input or output: name, element type and dimensions (-1 where symbolic).</summary>
public sealed record GraphPort(string Name, DType DType, int[] Dims);

/// <summary>
/// The structure of one network of a model folder — nodes, initializer shapes, inputs and outputs — without its
/// weights, so that the sampler can find LoRA targets, size rules and the values it needs before any engine
/// loads the network. Works on both graph sources: PyTorch exports (weights transposed into
/// <c>onnx::MatMul_&lt;n&gt;</c>, module scope in node names) and CudaDream's builder graphs (weights named
/// <c>&lt;module&gt;.weight</c>, same node naming).
/// </summary>
public sealed class ModelFolderGraph
{
    /// <summary>A node: its exporter name, op type, input/output value names ("" = omitted) and module path.</summary>
    public sealed record NodeInfo(string Name, string Op, string[] Inputs, string[] Outputs, string Module, NodeProto Proto);

    private readonly Dictionary<string, NodeInfo> _producer = new(StringComparer.Ordinal);
    private readonly Dictionary<string, List<(NodeInfo Node, int Index)>> _consumers = new(StringComparer.Ordinal);
    private readonly HashSet<string> _constants = new(StringComparer.Ordinal);

    public string Path { get; }
    public IReadOnlyList<NodeInfo> Nodes { get; }
    /// <summary>Every initializer's type and shape.</summary>
    public IReadOnlyDictionary<string, (DType DType, int[] Shape)> Initializers { get; }
    public IReadOnlyList<GraphPort> Inputs { get; }
    public IReadOnlyList<GraphPort> Outputs { get; }

    private ModelFolderGraph(string path, OnnxModel model)
    {
        Path = path;
        var g = model.Proto.Graph;
        Initializers = model.InitializerInfo.ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal);
        Inputs = g.Input.Where(i => !Initializers.ContainsKey(i.Name)).Select(i => Port(path, i)).ToList();
        Outputs = g.Output.Select(o => Port(path, o)).ToList();
        var nodes = new List<NodeInfo>();
        foreach (var np in g.Node)
        {
            if (np.OpType == "Constant")
            {
                // Constant payloads are not kept: a view must not hold the model's data alive.
                foreach (var o in np.Output) _constants.Add(o);
                continue;
            }
            var node = new NodeInfo(np.Name, np.OpType, np.Input.ToArray(), np.Output.ToArray(), ModulePaths.FromNodeName(np.Name), np);
            nodes.Add(node);
            foreach (var o in node.Outputs) if (o.Length > 0) _producer[o] = node;
            for (int i = 0; i < node.Inputs.Length; i++)
            {
                if (node.Inputs[i].Length == 0) continue;
                if (!_consumers.TryGetValue(node.Inputs[i], out var list)) _consumers[node.Inputs[i]] = list = new();
                list.Add((node, i));
            }
        }
        Nodes = nodes;
    }

    /// <summary>
    /// Reads an ONNX file's structure. External weight files are opened (memory-mapped, bounds-checked) so that a
    /// missing or truncated <c>weights.pb</c> is reported now, by name, rather than by an engine later.
    /// </summary>
    public static ModelFolderGraph Load(string path)
    {
        using var model = OnnxModel.Load(path);
        return new ModelFolderGraph(path, model);
    }

    private static GraphPort Port(string path, ValueInfoProto vi)
    {
        var tt = vi.Type?.TensorType ?? throw new InvalidFileException(path, $"graph port '{vi.Name}' is not a tensor");
        if (!DTypes.TryFromOnnx(tt.ElemType, out var dtype)) throw new InvalidFileException(path, $"graph port '{vi.Name}' has unsupported element type {tt.ElemType}");
        var dims = tt.Shape?.Dim.Select(d => d.ValueCase == TensorShapeProto.Types.Dimension.ValueOneofCase.DimValue && d.DimValue is >= 0 and <= int.MaxValue ? (int)d.DimValue : -1).ToArray() ?? [];
        return new GraphPort(vi.Name, dtype, dims);
    }

    public GraphPort? Input(string name) => Inputs.FirstOrDefault(i => i.Name == name);
    public GraphPort? Output(string name) => Outputs.FirstOrDefault(o => o.Name == name);
    public NodeInfo? ProducerOf(string value) => _producer.GetValueOrDefault(value);
    public IReadOnlyList<(NodeInfo Node, int Index)> ConsumersOf(string value) =>
        _consumers.TryGetValue(value, out var list) ? list : Array.Empty<(NodeInfo, int)>();
    public bool IsInitializer(string value) => Initializers.ContainsKey(value);
    /// <summary>Known before running: an initializer or a Constant node's output.</summary>
    public bool IsConstant(string value) => Initializers.ContainsKey(value) || _constants.Contains(value);

    // ---- LoRA targets ----------------------------------------------------------------------

    /// <summary>
    /// Every linear and conv weight a LoRA may adapt, found through the node that consumes it (its name gives the
    /// module path): <c>Conv</c> weights ([out, in, k, k]); <c>Gemm</c> weights (stored [out, in] when transB = 1,
    /// else transposed); <c>MatMul</c> with an initializer operand (the torch exporter's constant-folded Wᵀ,
    /// stored [in, out]) or with <c>Transpose(W)</c> (builder graphs: W stored [out, in]).
    /// </summary>
    public IReadOnlyList<LoraWeightSlot> LinearWeights(string component)
    {
        var slots = new List<LoraWeightSlot>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        void Add(NodeInfo node, string initializer, bool transposed)
        {
            if (node.Module.Length == 0 || !seen.Add(initializer)) return;
            var shape = Initializers[initializer].Shape;
            if (shape.Length == 2 && transposed) shape = [shape[1], shape[0]];
            else if (shape.Length != 4 && shape.Length != 2) return;
            slots.Add(new LoraWeightSlot(component, node.Module, initializer, shape, transposed));
        }
        foreach (var node in Nodes)
        {
            switch (node.Op)
            {
                case "Conv" when node.Inputs.Length > 1 && IsInitializer(node.Inputs[1]) && Initializers[node.Inputs[1]].Shape.Length == 4:
                    Add(node, node.Inputs[1], transposed: false);
                    break;
                case "Gemm" when node.Inputs.Length > 1 && IsInitializer(node.Inputs[1]):
                    Add(node, node.Inputs[1], transposed: IntAttribute(node, "transB", 0) == 0);
                    break;
                case "MatMul" when node.Inputs.Length > 1:
                    var b = node.Inputs[1];
                    if (IsInitializer(b) && Initializers[b].Shape.Length == 2) Add(node, b, transposed: true);
                    else if (ProducerOf(b) is { Op: "Transpose" } t && IsInitializer(t.Inputs[0]) && Initializers[t.Inputs[0]].Shape.Length == 2
                             && IntsAttribute(t, "perm") is null or [1, 0])
                        Add(node, t.Inputs[0], transposed: false);
                    break;
            }
        }
        return slots;
    }

    // ---- image sizes -----------------------------------------------------------------------

    /// <summary>Convolutions with stride 2: the UNet's (and VAE encoder's) downsamplers.</summary>
    public int CountDownsamplers() => Nodes.Count(n => n.Op == "Conv" && IntsAttribute(n, "strides") is { Length: > 0 } s && s.All(v => v == 2));

    /// <summary>Resize (upsampling) nodes.</summary>
    public int CountResizes() => Nodes.Count(n => n.Op is "Resize" or "Upsample");

    /// <summary>
    /// True when some upsampler scales by a constant factor (torch exports: <c>Resize(x, roi, scales = [1,1,2,2])</c>),
    /// so its output only matches the skip connection when every downsampler halved an even size. False when every
    /// Resize takes its <c>sizes</c> from a computed shape (CudaDream's builder: the skip connection's own size).
    /// </summary>
    public bool HasFixedScaleUpsampling()
    {
        foreach (var n in Nodes.Where(n => n.Op is "Resize" or "Upsample"))
        {
            string sizes = n.Op == "Resize" && n.Inputs.Length > 3 ? n.Inputs[3] : "";
            // Constant scales, constant sizes, or scales computed at run time: a factor, not the skip connection's size.
            if (sizes.Length == 0 || IsConstant(sizes)) return true;
        }
        return false;
    }

    // ---- CLIP skip -------------------------------------------------------------------------

    private static readonly Regex LayerNorm1 = new(@"^(?<prefix>.*?)encoder\.layers\.(?<i>\d+)\.layer_norm1$", RegexOptions.CultureInvariant);

    /// <summary>
    /// Where to cut the text encoder for CLIP skip k (AUTOMATIC1111's "stop at last layers"): the final layer norm
    /// is made to read hidden_states[−k] (the output of layer N−k, 0-based) instead of the last layer's output.
    /// Returns the value to read and the (node, input) sites to rewire; nodes are named by their first output.
    /// </summary>
    public ClipSkipEdit ClipSkip(int skip)
    {
        var layerInputs = new SortedDictionary<int, string>();
        string? finalInput = null;
        var finalSites = new List<(string NodeOutput, int Index)>();
        foreach (var node in Nodes)
        {
            var m = LayerNorm1.Match(node.Module);
            bool isFinal = node.Module.EndsWith("final_layer_norm", StringComparison.Ordinal);
            if (!m.Success && !isFinal) continue;
            for (int i = 0; i < node.Inputs.Length; i++)
            {
                var v = node.Inputs[i];
                if (v.Length == 0 || IsConstant(v) || ProducerOf(v)?.Module == node.Module) continue;
                if (isFinal)
                {
                    if (finalInput != null && finalInput != v) throw new InvalidFileException(Path, $"CLIP skip: final_layer_norm reads two hidden states ('{finalInput}', '{v}')");
                    finalInput = v;
                    finalSites.Add((node.Outputs[0], i));
                }
                else layerInputs[int.Parse(m.Groups["i"].Value, System.Globalization.CultureInfo.InvariantCulture)] = v;
            }
        }
        int layers = layerInputs.Count;
        if (finalInput == null || layers == 0 || layerInputs.Keys.Last() != layers - 1)
            throw new InvalidFileException(Path, "CLIP skip: cannot find the encoder layers (encoder.layers.N.layer_norm1) and final_layer_norm in this text encoder");
        if (skip < 1 || skip > layers)
            throw new CudaDreamException($"--clip-skip {skip}: this text encoder has {layers} layers; use 1..{layers}");
        // hidden_states[j] is the input of layer j (j < N) or of the final norm (j = N); CLIP skip k reads hidden_states[N + 1 − k].
        int j = layers + 1 - skip;
        var value = j == layers ? finalInput : layerInputs[j];
        return new ClipSkipEdit(skip, layers, value, finalSites);
    }

    // ---- VAE encoder -----------------------------------------------------------------------

    /// <summary>
    /// The VAE encoder's posterior parameters: the <c>moments</c> output where the graph has one (builder graphs),
    /// else the value the exporter's <c>mean + std · RandomNormalLike</c> tail adds the noise to, traced back to the
    /// tensor mean and log-variance are sliced from (the quant_conv output).
    /// </summary>
    public string VaeMoments()
    {
        if (Output("moments") != null) return "moments";
        var random = Nodes.FirstOrDefault(n => n.Op is "RandomNormalLike" or "RandomNormal")
            ?? throw new InvalidFileException(Path, "VAE encoder: neither a 'moments' output nor the RandomNormalLike sampling tail was found");
        string v = random.Outputs[0];
        // noise → (Cast) → Mul(std) → Add(mean)
        var next = Single(v);
        if (next.Op == "Cast") next = Single(next.Outputs[0]);
        if (next.Op != "Mul") throw Unrecognised(next);
        var add = Single(next.Outputs[0]);
        if (add.Op != "Add") throw Unrecognised(add);
        var mean = add.Inputs[0] == next.Outputs[0] ? add.Inputs[1] : add.Inputs[0];
        var slice = ProducerOf(mean);
        if (slice is not { Op: "Slice" or "Split" }) throw Unrecognised(slice ?? add);
        return slice.Inputs[0];
    }

    private NodeInfo Single(string value)
    {
        var c = ConsumersOf(value);
        if (c.Count != 1) throw new InvalidFileException(Path, $"VAE encoder: value '{value}' has {c.Count} consumers; expected the exporter's sampling tail");
        return c[0].Node;
    }

    private InvalidFileException Unrecognised(NodeInfo n) =>
        new(Path, $"VAE encoder: node '{n.Name}' ({n.Op}) is not part of the mean + std · noise sampling tail this sampler recognises");

    // ---- helpers ---------------------------------------------------------------------------

    public static long IntAttribute(NodeInfo node, string name, long fallback)
    {
        var a = node.Proto.Attribute.FirstOrDefault(a => a.Name == name);
        return a == null ? fallback : a.I;
    }

    public static long[]? IntsAttribute(NodeInfo node, string name) =>
        node.Proto.Attribute.FirstOrDefault(a => a.Name == name)?.Ints.ToArray();
}

/// <summary>
/// A weight a LoRA can adapt: the network (<see cref="Engine.Training.Lora.LoraComponents"/>), module path, the
/// initializer holding it, the state-dict shape ([out, in] or [out, in, k, k]) and whether the initializer stores
/// the transpose ([in, out], the torch exporter's folded <c>MatMul(x, Wᵀ)</c>).
/// </summary>
public sealed record LoraWeightSlot(string Component, string ModulePath, string Initializer, int[] WeightShape, bool StoredTransposed);

/// <summary>
/// CLIP skip as a graph edit: every (node, input) in <see cref="Sites"/> — the final layer norm's reads of the last
/// hidden state, nodes named by their first output — reads <see cref="HiddenState"/> instead.
/// </summary>
public sealed record ClipSkipEdit(int Skip, int Layers, string HiddenState, IReadOnlyList<(string NodeOutput, int Index)> Sites);
