using CudaDream.Engine.Autodiff;
using CudaDream.Engine.Graph;

namespace CudaDream.Engine.Training;

/// <summary>
/// Gradient checkpointing (Chen et al. 2016, "Training Deep Nets with Sublinear Memory Cost") at the
/// granularity diffusers uses: each top-level block (a resnet, a transformer, a CLIP layer) is a segment.
/// The values a segment passes on are kept; the activations inside it that the backward pass needs are
/// not kept but recomputed from the segment's inputs right before that segment's backward nodes run.
/// Random ops recompute the same draws (the generator is counter-based), so gradients are unchanged.
/// </summary>
public static class Checkpointing
{
    /// <summary>Rewrites a differentiated graph (forward, loss, backward) in place; returns how many nodes are recomputed.</summary>
    public static int Apply(ComputeGraph g)
    {
        // The loss nodes (named /loss/...) separate the forward from the backward.
        int lossIndex = g.Nodes.FindIndex(n => n.Name.StartsWith("/loss/", StringComparison.Ordinal));
        if (lossIndex < 0) throw new InvalidOperationException("checkpointing needs a differentiated graph with a loss");
        var forward = g.Nodes.Take(lossIndex).ToList();
        var backward = new HashSet<Node>(g.Nodes.Skip(lossIndex + 1));
        var outputs = g.Outputs.ToHashSet();
        int recomputed = 0;

        foreach (var segment in forward.GroupBy(n => SegmentOf(n.Name)).Where(s => s.Key != null))
        {
            var members = segment.ToHashSet();
            // Activations the backward reads that leave the segment only toward the backward: recompute them.
            var recompute = members.SelectMany(n => n.Outputs)
                .Where(v => !outputs.Contains(v) && v.Consumers.Any(backward.Contains) && !v.Consumers.Any(c => !backward.Contains(c) && !members.Contains(c)))
                .ToHashSet();
            if (recompute.Count == 0) continue;

            // The segment's nodes that these values depend on, in forward order.
            var needed = new HashSet<Node>();
            var stack = new Stack<Value>(recompute);
            while (stack.Count > 0)
            {
                var v = stack.Pop();
                if (v.Producer == null || !members.Contains(v.Producer) || !needed.Add(v.Producer)) continue;
                foreach (var i in v.Producer.Inputs) if (i != null) stack.Push(i);
            }
            var clones = forward.Where(needed.Contains).ToList();
            var firstUse = g.Nodes.FindIndex(n => backward.Contains(n) && n.Inputs.Any(i => i != null && recompute.Contains(i)));
            var map = new Dictionary<Value, Value>();
            var inserted = new List<Node>();
            foreach (var n in clones)
            {
                var outs = n.Outputs.Select(o => map[o] = new Value(o.Name + "/recompute", o.DType, o.Shape)).ToList();
                var copy = new Node(n.Op, n.Name + "/recompute", n.Inputs.Select(i => i != null && map.TryGetValue(i, out var m) ? m : i), outs, n.Attributes, n.Module);
                inserted.Add(copy);
            }
            g.Nodes.InsertRange(firstUse, inserted);
            foreach (var n in inserted) ComputeGraph.Link(n);
            foreach (var b in backward)
                for (int k = 0; k < b.Inputs.Count; k++)
                {
                    var i = b.Inputs[k];
                    if (i == null || !recompute.Contains(i)) continue;
                    i.Consumers.Remove(b);
                    b.Inputs[k] = map[i];
                    map[i].Consumers.Add(b);
                }
            recomputed += inserted.Count;
        }
        return recomputed;
    }

    /// <summary>
    /// The block a node belongs to, from its exporter name: the scope up to the second indexed module
    /// (<c>/down_blocks.0/resnets.1/…</c> → <c>down_blocks.0/resnets.1</c>, <c>/text_model/encoder/layers.3/…</c> →
    /// <c>text_model/encoder/layers.3</c>); null for nodes outside indexed blocks (kept as they are).
    /// </summary>
    public static string? SegmentOf(string nodeName)
    {
        var parts = nodeName.Split('/', StringSplitOptions.RemoveEmptyEntries);
        int indexed = 0, end = -1;
        for (int i = 0; i < parts.Length - 1; i++)
        {
            int dot = parts[i].LastIndexOf('.');
            if (dot > 0 && dot < parts[i].Length - 1 && parts[i][(dot + 1)..].All(char.IsDigit))
            {
                indexed++;
                end = i;
                if (indexed == 2) break;
            }
        }
        return end < 0 ? null : string.Join('/', parts[..(end + 1)]);
    }
}
