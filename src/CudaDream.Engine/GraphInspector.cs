using CudaDream.Engine.Backends.Cpu;
using CudaDream.Engine.Formats;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Ops;

namespace CudaDream.Engine;

/// <summary>What <c>cudadream inspect</c> prints about a graph.</summary>
public sealed record GraphReport
{
    public required string Path { get; init; }
    public int Opset { get; init; }
    public IReadOnlyDictionary<string, int> OpsBefore { get; init; } = new Dictionary<string, int>();
    public IReadOnlyDictionary<string, int>? OpsAfter { get; init; }
    public IReadOnlyDictionary<string, int[]?> Inputs { get; init; } = new Dictionary<string, int[]?>();
    public long Parameters { get; init; }
    public long ParameterBytes { get; init; }
    public bool WeightsLoaded { get; init; }
    /// <summary>FLOPs of one forward (2 × multiply-adds of matrix products, convolutions and attention).</summary>
    public long? ForwardFlops { get; init; }
    /// <summary>Planned activation arena of one forward (weights excluded).</summary>
    public long? ActivationBytes { get; init; }
    public long? ActivationBytesUnplanned { get; init; }
    public int? RemainingShapeArithmetic { get; init; }
    public IReadOnlyDictionary<string, int>? Fusions { get; init; }
}

public static class GraphInspector
{
    /// <summary>Inspects a model; with shapes for every dynamic input it also specialises, fuses and plans.</summary>
    public static GraphReport Inspect(string path, IReadOnlyDictionary<string, int[]> shapes, bool fuse = true)
    {
        var model = OnnxModel.LoadForInspection(path);
        try
        {
            var before = model.Proto.Graph.Node.GroupBy(n => n.OpType).OrderByDescending(g => g.Count()).ThenBy(g => g.Key, StringComparer.Ordinal)
                .ToDictionary(g => g.Key, g => g.Count());
            long parameters = 0, bytes = 0;
            foreach (var (_, info) in model.InitializerInfo)
            {
                long n = Tensors.Shapes.Numel(info.Shape);
                parameters += n;
                bytes += n * Tensors.DTypes.Size(info.DType);
            }
            var g = OnnxImporter.Import(model);
            var report = new GraphReport
            {
                Path = path, Opset = model.Opset, OpsBefore = before, Parameters = parameters, ParameterBytes = bytes,
                WeightsLoaded = !model.HasMissingWeights,
                Inputs = g.Inputs.ToDictionary(i => i.Name, i => i.Shape),
            };
            bool dynamic = g.Inputs.Any(i => !shapes.ContainsKey(i.Name) && (i.Shape == null || i.Shape.Any(d => d < 0)));
            if (dynamic) return report;
            var spec = Specializer.Specialize(g, shapes, CpuEvaluator.Instance);
            Simplifier.Run(g);
            var fusions = fuse ? Fuser.Run(g) : null;
            g.RemoveDeadNodes();
            var plan = ExecutionPlan.Create(g);
            return report with
            {
                OpsAfter = g.OpHistogram(),
                ForwardFlops = 2 * g.Nodes.Sum(OpRegistry.MultiplyAdds),
                ActivationBytes = plan.ArenaBytes,
                ActivationBytesUnplanned = plan.UnplannedBytes,
                RemainingShapeArithmetic = Specializer.CountShapeArithmetic(g),
                Fusions = fusions,
            };
        }
        finally
        {
            model.Dispose();
        }
    }
}
