using CudaDream.Engine.Tensors;

namespace CudaDream.Engine.Graph;

/// <summary>
/// A value flowing between nodes: a graph input, a node output, or a constant (an initializer,
/// i.e. a weight, or a constant produced by folding). After specialisation every value has a
/// static <see cref="Shape"/>.
/// </summary>
public sealed class Value
{
    public string Name { get; set; }
    public DType DType { get; set; }
    /// <summary>Static shape; null while unknown; a dimension of -1 is symbolic before specialisation.</summary>
    public int[]? Shape { get; set; }
    /// <summary>Known contents (weights and folded constants). Null for runtime values and for weights whose data was not loaded.</summary>
    public Tensor? Constant { get; set; }
    /// <summary>
    /// A large constant whose elements all equal this value, kept unmaterialised (e.g. the
    /// <c>ConstantOfShape(0)</c> [B·h, N, N] that torch exports add to attention logits: 1 GiB at SD 1.5 sizes).
    /// </summary>
    public double? Splat { get; set; }
    /// <summary>True for initializers (model parameters), as opposed to folded constants.</summary>
    public bool IsWeight { get; set; }
    public Node? Producer { get; internal set; }
    public List<Node> Consumers { get; } = new();

    public Value(string name, DType dtype, int[]? shape)
    {
        Name = name;
        DType = dtype;
        Shape = shape;
    }

    /// <summary>Known at specialisation time (data, splat, or a weight whose data was not loaded).</summary>
    public bool IsConstant => Producer == null && (Constant != null || Splat != null || IsWeight);
    /// <summary>Known data (or splat) that folding can compute with.</summary>
    public bool HasKnownData => Constant != null || Splat != null;
    public bool HasStaticShape => Shape != null && Shape.All(d => d >= 0);
    public int Rank => Shape?.Length ?? throw new InvalidOperationException($"value '{Name}' has no known shape");
    public long Numel => Shapes.Numel(Shape ?? throw new InvalidOperationException($"value '{Name}' has no known shape"));

    public override string ToString() => $"{Name}: {DType}{(Shape == null ? "[?]" : Shapes.Format(Shape))}";
}

/// <summary>One operation. <see cref="Op"/> is an ONNX op type or a fused op (each defined in its home under Engine/Ops, listed by <see cref="OpRegistry"/>).</summary>
public sealed class Node
{
    public string Op { get; set; }
    /// <summary>The exporter's node name, e.g. <c>/down_blocks.0/attentions.0/transformer_blocks.0/attn1/to_q/MatMul</c>.</summary>
    public string Name { get; set; }
    /// <summary>Inputs in ONNX order; an omitted optional input is null.</summary>
    public List<Value?> Inputs { get; }
    public List<Value> Outputs { get; }
    public Attributes Attributes { get; }
    /// <summary>Module path the node belongs to (<c>down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q</c>); set for fused ops, derived from the name otherwise.</summary>
    public string Module { get; set; }

    public Node(string op, string name, IEnumerable<Value?> inputs, IEnumerable<Value> outputs, Attributes? attributes = null, string? module = null)
    {
        Op = op;
        Name = name;
        Inputs = inputs.ToList();
        Outputs = outputs.ToList();
        Attributes = attributes ?? new Attributes();
        Module = module ?? ModulePaths.FromNodeName(name);
    }

    public Value Input(int i) => i < Inputs.Count && Inputs[i] != null ? Inputs[i]! : throw new GraphException(this, $"input {i} is missing");
    public Value? OptionalInput(int i) => i < Inputs.Count ? Inputs[i] : null;
    public Value Output(int i = 0) => Outputs[i];

    public override string ToString() => $"{Op} '{Name}'";
}

/// <summary>An error tied to a node: names the node and its op type.</summary>
public sealed class GraphException : CudaDreamException
{
    public GraphException(Node node, string problem) : base($"node '{node.Name}' ({node.Op}): {problem}") { }
    public GraphException(string problem) : base(problem) { }
}

/// <summary>
/// The engine's graph IR: values with dtypes and (after specialisation) static shapes, nodes in
/// topological order, constants. Passes transform it in place.
/// </summary>
public sealed class ComputeGraph
{
    public List<Node> Nodes { get; } = new();
    public List<Value> Inputs { get; } = new();
    public List<Value> Outputs { get; } = new();
    /// <summary>Every weight (initializer), by name.</summary>
    public Dictionary<string, Value> Weights { get; } = new(StringComparer.Ordinal);
    public int Opset { get; set; }
    /// <summary>Where the graph came from (file path), for messages.</summary>
    public string Source { get; set; } = "";
    /// <summary>Objects that own memory the constants view (memory maps); disposed with the graph's owner.</summary>
    public List<IDisposable> Owners { get; } = new();

    public Node AddNode(Node node)
    {
        Nodes.Add(node);
        Link(node);
        return node;
    }

    /// <summary>Registers a node as producer/consumer of its values (after construction or edits).</summary>
    public static void Link(Node node)
    {
        foreach (var v in node.Inputs) v?.Consumers.Add(node);
        foreach (var v in node.Outputs) v.Producer = node;
    }

    /// <summary>Detaches a node from its values (its outputs keep their consumers: replace them first).</summary>
    public void Remove(Node node)
    {
        foreach (var v in node.Inputs) v?.Consumers.Remove(node);
        foreach (var v in node.Outputs) if (v.Producer == node) v.Producer = null;
        Nodes.Remove(node);
    }

    /// <summary>Makes every consumer (and graph output slot) of <paramref name="old"/> read <paramref name="replacement"/>.</summary>
    public void ReplaceAllUses(Value old, Value replacement)
    {
        if (old == replacement) return;
        foreach (var c in old.Consumers.ToList())
        {
            for (int i = 0; i < c.Inputs.Count; i++)
                if (c.Inputs[i] == old) c.Inputs[i] = replacement;
            replacement.Consumers.Add(c);
        }
        old.Consumers.Clear();
        for (int i = 0; i < Outputs.Count; i++)
        {
            if (Outputs[i] != old) continue;
            // Graph outputs keep their public names.
            replacement.Name = old.Name;
            Outputs[i] = replacement;
        }
    }

    /// <summary>Removes nodes whose outputs reach no graph output (dead code).</summary>
    public int RemoveDeadNodes()
    {
        var live = new HashSet<Node>();
        var stack = new Stack<Value>(Outputs);
        var seen = new HashSet<Value>();
        while (stack.Count > 0)
        {
            var v = stack.Pop();
            if (!seen.Add(v) || v.Producer == null) continue;
            if (live.Add(v.Producer))
                foreach (var i in v.Producer.Inputs) if (i != null) stack.Push(i);
        }
        int removed = 0;
        foreach (var n in Nodes.ToList())
            if (!live.Contains(n)) { Remove(n); removed++; }
        return removed;
    }

    /// <summary>Re-orders <see cref="Nodes"/> topologically (stable: keeps the existing order where it is valid).</summary>
    public void SortTopologically()
    {
        var index = new Dictionary<Node, int>();
        for (int i = 0; i < Nodes.Count; i++) index[Nodes[i]] = i;
        var state = new Dictionary<Node, byte>();
        var order = new List<Node>(Nodes.Count);
        foreach (var root in Nodes)
        {
            if (state.ContainsKey(root)) continue;
            // Iterative DFS over producers, so deep graphs do not overflow the stack.
            var stack = new Stack<(Node node, int next)>();
            stack.Push((root, 0));
            state[root] = 1;
            while (stack.Count > 0)
            {
                var (n, next) = stack.Pop();
                if (next < n.Inputs.Count)
                {
                    stack.Push((n, next + 1));
                    var p = n.Inputs[next]?.Producer;
                    if (p == null || !index.ContainsKey(p)) continue;
                    if (!state.TryGetValue(p, out var s)) { state[p] = 1; stack.Push((p, 0)); }
                    else if (s == 1) throw new GraphException(n, "the graph has a cycle");
                    continue;
                }
                state[n] = 2;
                order.Add(n);
            }
        }
        Nodes.Clear();
        Nodes.AddRange(order);
    }

    /// <summary>All values referenced by nodes, inputs and outputs.</summary>
    public IEnumerable<Value> AllValues()
    {
        var seen = new HashSet<Value>();
        foreach (var v in Inputs) if (seen.Add(v)) yield return v;
        foreach (var n in Nodes)
        {
            foreach (var v in n.Inputs) if (v != null && seen.Add(v)) yield return v;
            foreach (var v in n.Outputs) if (seen.Add(v)) yield return v;
        }
        foreach (var v in Outputs) if (seen.Add(v)) yield return v;
    }

    /// <summary>Finds a value by name among node outputs, inputs and weights.</summary>
    public Value? FindValue(string name) => AllValues().FirstOrDefault(v => v.Name == name);

    public Dictionary<string, int> OpHistogram() =>
        Nodes.GroupBy(n => n.Op).OrderByDescending(g => g.Count()).ThenBy(g => g.Key, StringComparer.Ordinal)
            .ToDictionary(g => g.Key, g => g.Count());
}

/// <summary>Node-name → module-path conventions of the torch ONNX exporter.</summary>
public static class ModulePaths
{
    /// <summary>
    /// <c>/down_blocks.0/attentions.0/transformer_blocks.0/attn1/to_q/MatMul</c> → <c>down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q</c>:
    /// the scope is every '/'-separated part but the last (the op's own name).
    /// Names without a leading '/' have no module scope and map to "".
    /// </summary>
    public static string FromNodeName(string nodeName)
    {
        if (string.IsNullOrEmpty(nodeName) || nodeName[0] != '/') return "";
        var parts = nodeName.Split('/', StringSplitOptions.RemoveEmptyEntries);
        return parts.Length <= 1 ? "" : string.Join('.', parts[..^1]);
    }
}
