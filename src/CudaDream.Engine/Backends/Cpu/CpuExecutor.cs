using System.Diagnostics;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Tensors;

namespace CudaDream.Engine.Backends.Cpu;

/// <summary>
/// Executes an <see cref="ExecutionPlan"/> on the CPU: one native arena allocated once, every
/// runtime value a view at its planned offset, no allocation per step.
/// </summary>
public sealed class CpuExecutor : IDisposable
{
    private readonly ExecutionPlan _plan;
    private readonly NativeArena _arena;
    private readonly Dictionary<Value, Tensor> _splats = new();
    private readonly (Tensor?[] inputs, Tensor[] outputs)[] _bound;

    public CpuContext Context { get; set; }
    /// <summary>Seconds spent per op type in the last run (filled when <see cref="Profile"/> is true).</summary>
    public Dictionary<string, double> OpSeconds { get; } = new();
    public bool Profile { get; set; }

    public CpuExecutor(ExecutionPlan plan, CpuContext? context = null)
    {
        _plan = plan;
        Context = context ?? CpuContext.Default;
        _arena = new NativeArena(plan.ArenaBytes);
        _bound = plan.Steps.Select(n => (n.Inputs.Select(v => v == null ? null : Bind(v)).ToArray(), n.Outputs.Select(Bind).ToArray())).ToArray();
    }

    public ExecutionPlan Plan => _plan;

    /// <summary>The tensor a value occupies during execution (a view into the arena, a constant, or a materialised splat).</summary>
    public Tensor Bind(Value v)
    {
        if (v.Constant != null) return v.Constant;
        if (v.Splat != null)
        {
            if (!_splats.TryGetValue(v, out var s)) _splats[v] = s = Specializer.MaterializeSplat(v);
            return s;
        }
        if (v.IsWeight) throw new CudaDreamException($"{_plan.Graph.Source}: weight '{v.Name}' has no data (its external weights file was not loaded)");
        if (!_plan.Offsets.TryGetValue(v, out var off)) throw new GraphException($"value '{v.Name}' has no place in the plan");
        return _arena.Tensor(v.DType, v.Shape!, off);
    }

    /// <summary>Copies inputs in, runs every step, and returns copies of the requested values (graph outputs by default).</summary>
    public Dictionary<string, Tensor> Run(IReadOnlyDictionary<string, Tensor> inputs, IEnumerable<Value>? fetch = null)
    {
        var g = _plan.Graph;
        foreach (var input in g.Inputs)
        {
            if (!inputs.TryGetValue(input.Name, out var t)) throw new CudaDreamException($"missing input '{input.Name}' (expected {input.DType}{Shapes.Format(input.Shape!)})");
            if (!Shapes.Equal(t.Shape, input.Shape!))
                throw new CudaDreamException($"input '{input.Name}' has shape {Shapes.Format(t.Shape)}, the plan was specialised for {Shapes.Format(input.Shape!)}");
            t.To(input.DType).Data.Span.CopyTo(Bind(input).Data.Span);
        }
        OpSeconds.Clear();
        var sw = new Stopwatch();
        for (int s = 0; s < _plan.Steps.Count; s++)
        {
            var node = _plan.Steps[s];
            if (Profile) sw.Restart();
            CpuOps.Run(node, _bound[s].inputs, _bound[s].outputs, Context);
            if (Profile) OpSeconds[node.Op] = OpSeconds.GetValueOrDefault(node.Op) + sw.Elapsed.TotalSeconds;
        }
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var v in fetch ?? g.Outputs) result[v.Name] = Bind(v).Clone();
        return result;
    }

    public void Dispose() => _arena.Dispose();
}
