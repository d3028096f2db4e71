using CudaDream.Engine.Autodiff;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Ops;
using CudaDream.Engine.Tensors;

namespace CudaDream.Engine.Training.Lora;

/// <summary>An adapter attached to a graph: its trainable down/up values and the node it adapts.</summary>
public sealed record AttachedLora(LoraAdapter Adapter, Value Down, Value Up, Node Target);

/// <summary>
/// LoRA in the engine's graphs. The adaptable modules of a (fused) graph are its Linear and Conv nodes,
/// named by module path. Attaching an adapter adds a low-rank branch beside the node,
/// y = f(x; W) + (alpha/rank) · up(down(dropout(x))), so W_eff = W + scale · up @ down is never
/// materialised and the frozen W gets no gradient work.
/// </summary>
public static class GraphLora
{
    /// <summary>The modules a LoRA can address in this graph, with their weights' torch-layout shapes ([out,in] or [out,in,k,k]).</summary>
    public static List<LoraTarget> Targets(ComputeGraph g, string component)
    {
        var result = new List<LoraTarget>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var n in g.Nodes)
        {
            if (string.IsNullOrEmpty(n.Module) || !seen.Add(n.Module)) continue;
            if (n.Op == MatMulOps.Linear && n.Input(1).IsConstant)
            {
                var w = n.Input(1).Shape!;
                result.Add(new LoraTarget(component, n.Module, n.Attributes.Int("transB", 0) != 0 ? w : new[] { w[1], w[0] }));
            }
            else if (n.Op == "Conv" && n.Input(1).IsConstant && n.Attributes.Int("group", 1) == 1)
                result.Add(new LoraTarget(component, n.Module, n.Input(1).Shape!));
            else seen.Remove(n.Module);
        }
        return result;
    }

    /// <summary>
    /// Adds one branch per adapter. Down/Up become weight values holding managed float32 copies that an
    /// optimizer may update in place. <paramref name="dropout"/> drops inputs of the down projection.
    /// </summary>
    public static List<AttachedLora> Attach(ComputeGraph g, IReadOnlyList<LoraAdapter> adapters, float dropout = 0)
    {
        var byModule = new Dictionary<string, Node>(StringComparer.Ordinal);
        foreach (var n in g.Nodes)
            if ((n.Op == MatMulOps.Linear || n.Op == "Conv") && !string.IsNullOrEmpty(n.Module)) byModule.TryAdd(n.Module, n);
        var attached = new List<AttachedLora>();
        int stream = 0;
        foreach (var a in adapters)
        {
            if (!byModule.TryGetValue(a.ModulePath, out var target))
                throw new CudaDreamException($"LoRA module '{a.ModulePath}' matches no Linear or Conv node of {g.Source}");
            attached.Add(AttachOne(g, target, a, dropout, stream++));
        }
        g.SortTopologically();
        return attached;
    }

    private static AttachedLora AttachOne(ComputeGraph g, Node target, LoraAdapter a, float dropout, int stream)
    {
        var x = target.Input(0);
        var y = target.Output();
        var dtype = x.DType;
        var down = new Value($"{a.ModulePath}.lora_down.weight", dtype, a.Down.Shape) { Constant = a.Down.To(DType.F32).Clone().To(dtype), IsWeight = true };
        var up = new Value($"{a.ModulePath}.lora_up.weight", dtype, a.Up.Shape) { Constant = a.Up.To(DType.F32).Clone().To(dtype), IsWeight = true };
        string scope = target.Name[..(target.Name.LastIndexOf('/') + 1)] + "lora/";
        Value Emit(string op, Value?[] inputs, Attributes? attrs = null)
        {
            var o = new Value($"{scope}{op}_{g.Nodes.Count}_output_0", dtype, null);
            var n = new Node(op, $"{scope}{op}_{g.Nodes.Count}", inputs, new[] { o }, attrs, target.Module);
            OpRegistry.InferShapes(n);
            g.AddNode(n);
            return o;
        }

        // The base node now writes a new value; the old output value becomes base + branch.
        var baseOut = new Value(y.Name + "/base", dtype, y.Shape);
        target.Outputs[0] = baseOut;
        baseOut.Producer = target;
        y.Producer = null;

        var input = dropout > 0 ? Emit(RandomOps.CounterDropout, new[] { x }, new Attributes().Set("p", dropout).Set("stream", (long)stream)) : x;
        Value branch;
        if (target.Op == MatMulOps.Linear)
        {
            var h = Emit(MatMulOps.Linear, new[] { input, down }, new Attributes().Set("transB", 1L));
            branch = Emit(MatMulOps.Linear, new[] { h, up }, new Attributes().Set("transB", 1L).Set("alpha", a.Scale));
        }
        else
        {
            // Down takes the conv's geometry (kernel, stride, padding); up is 1×1.
            var attrs = target.Attributes.Clone();
            var h = Emit("Conv", new[] { input, down }, attrs);
            var u = Emit("Conv", new[] { h, up }, new Attributes());
            branch = Emit("Mul", new[] { u, new Value($"{a.ModulePath}.lora_scale", dtype, Array.Empty<int>()) { Constant = Tensor.FromArray(new[] { (double)a.Scale }, Array.Empty<int>()).To(dtype) } });
        }
        var sum = new Node("Add", $"{scope}Add", new[] { baseOut, branch }, new[] { y }, null, target.Module);
        OpRegistry.InferShapes(sum);
        g.AddNode(sum);
        return new AttachedLora(a, down, up, target);
    }

    /// <summary>
    /// Fresh adapters for training (Hu et al. 2021: down random, up zero, so training starts at the base model):
    /// down ~ Kaiming-uniform(a=√5) as torch.nn.Linear initialises, or N(0, 1/rank), from the counter-based generator.
    /// </summary>
    public static List<LoraAdapter> Initialize(IReadOnlyList<LoraTarget> targets, int rank, float alpha, ulong seed, bool normal = false,
        int? convRank = null, float? convAlpha = null)
    {
        var result = new List<LoraAdapter>();
        long element = 0;
        foreach (var t in targets)
        {
            bool conv = t.WeightShape.Length == 4;
            int r = conv ? convRank ?? rank : rank;
            float al = conv ? convAlpha ?? alpha : alpha;
            int fanIn = (int)(Shapes.Numel(t.WeightShape) / t.WeightShape[0]);
            int[] downShape = conv ? new[] { r, t.WeightShape[1], t.WeightShape[2], t.WeightShape[3] } : new[] { r, fanIn };
            int[] upShape = conv ? new[] { t.WeightShape[0], r, 1, 1 } : new[] { t.WeightShape[0], r };
            var down = new float[Shapes.Numel(downShape)];
            if (normal)
            {
                Randomness.CounterRng.FillNormal(down, seed, 0, Randomness.RandomPurpose.LoraInit, element);
                float s = 1f / r;
                for (int i = 0; i < down.Length; i++) down[i] *= s;
            }
            else
            {
                // kaiming_uniform_(a=√5): bound = √(6 / ((1 + a²) · fan_in)) = 1/√fan_in.
                Randomness.CounterRng.FillUniform(down, seed, 0, Randomness.RandomPurpose.LoraInit, element);
                float bound = 1f / MathF.Sqrt(fanIn);
                for (int i = 0; i < down.Length; i++) down[i] = (2 * down[i] - 1) * bound;
            }
            element += down.Length;
            result.Add(new LoraAdapter(t.ModulePath, t.Component, Tensor.FromArray(down, downShape), Tensor.Zeros(DType.F32, upShape), al, r));
        }
        return result;
    }
}
