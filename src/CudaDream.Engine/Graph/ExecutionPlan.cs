using CudaDream.Engine.Tensors;

namespace CudaDream.Engine.Graph;

/// <summary>
/// A specialised graph ready to execute: the nodes to run in order and, for every runtime value, its
/// offset in one arena. View ops (Reshape, Squeeze, ...) on runtime values cost nothing: their
/// output aliases the input's bytes. Backends execute plans; they do not plan.
/// </summary>
public sealed class ExecutionPlan
{
    public ComputeGraph Graph { get; }
    /// <summary>Nodes to execute, in order (view nodes excluded).</summary>
    public IReadOnlyList<Node> Steps { get; }
    /// <summary>Arena offset of every runtime value (graph inputs, node outputs, aliases).</summary>
    public IReadOnlyDictionary<Value, long> Offsets { get; }
    public long ArenaBytes { get; }
    /// <summary>Sum of all runtime buffers if none shared memory (for reporting the planner's saving).</summary>
    public long UnplannedBytes { get; }

    private ExecutionPlan(ComputeGraph g, List<Node> steps, Dictionary<Value, long> offsets, long arena, long unplanned)
    {
        Graph = g;
        Steps = steps;
        Offsets = offsets;
        ArenaBytes = arena;
        UnplannedBytes = unplanned;
    }

    public static long ByteSize(Value v) => v.Numel * v.DType.Size();

    public static ExecutionPlan Create(ComputeGraph g)
    {
        foreach (var v in g.AllValues())
            if (!v.HasStaticShape) throw new GraphException($"{g.Source}: value '{v.Name}' has no static shape; specialise the graph first");

        // Alias view outputs to the buffer they view.
        var root = new Dictionary<Value, Value>();
        Value Root(Value v) => root.TryGetValue(v, out var r) ? r : v;
        var steps = new List<Node>();
        foreach (var n in g.Nodes)
        {
            var schema = OpRegistry.Get(n);
            var src = n.Inputs.Count > 0 ? n.Inputs[0] : null;
            if (schema.IsView && src != null && !src.IsConstant && n.Outputs[0].DType == src.DType && !g.Outputs.Contains(n.Outputs[0]))
            {
                root[n.Outputs[0]] = Root(src);
                continue;
            }
            steps.Add(n);
        }

        var first = new Dictionary<Value, int>();
        var last = new Dictionary<Value, int>();
        void Touch(Value v, int step)
        {
            if (v.IsConstant) return;
            v = Root(v);
            if (!first.ContainsKey(v)) first[v] = step;
            last[v] = Math.Max(last.GetValueOrDefault(v, step), step);
        }
        foreach (var i in g.Inputs) Touch(i, 0);
        // Reads of an alias extend the life of its root (Touch maps aliases to roots).
        for (int s = 0; s < steps.Count; s++)
        {
            foreach (var o in steps[s].Outputs) Touch(o, s);
            foreach (var i in steps[s].Inputs) if (i != null) Touch(i, s);
        }
        foreach (var o in g.Outputs) if (!o.IsConstant) Touch(o, steps.Count);

        var ids = new Dictionary<Value, int>();
        var lifetimes = new List<BufferLifetime>();
        foreach (var (v, f) in first)
        {
            ids[v] = ids.Count;
            lifetimes.Add(new BufferLifetime(ids[v], ByteSize(v), f, last[v]));
        }
        var layout = MemoryPlanner.Plan(lifetimes);
        var offsets = new Dictionary<Value, long>();
        foreach (var (v, id) in ids) offsets[v] = layout.Offsets[id];
        foreach (var (alias, _) in root) if (ids.ContainsKey(Root(alias))) offsets[alias] = offsets[Root(alias)];
        long unplanned = lifetimes.Sum(l => MemoryPlanner.Align(Math.Max(l.Bytes, 1), MemoryPlanner.DefaultAlignment));
        return new ExecutionPlan(g, steps, offsets, layout.PeakBytes, unplanned);
    }
}
