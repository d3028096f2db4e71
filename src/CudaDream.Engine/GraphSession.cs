using CudaDream.Engine.Backends;
using CudaDream.Engine.Backends.Cpu;
using CudaDream.Engine.Backends.Device;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Ops;
using CudaDream.Engine.Tensors;

namespace CudaDream.Engine;

public sealed record GraphSessionOptions
{
    /// <summary>Recognise and fuse patterns (Linear, GroupNorm, attention, ...). Off = run the graph as exported.</summary>
    public bool Fuse { get; init; } = true;
    /// <summary>Values to keep and return besides the graph outputs (by ONNX value name); fusion never hides them.</summary>
    public IReadOnlyList<string> ExtraOutputs { get; init; } = Array.Empty<string>();
    /// <summary>Seed for in-graph random ops.</summary>
    public ulong Seed { get; init; }
    public bool UseFastKernels { get; init; } = true;
    /// <summary>Where the plan runs: cpu (default), emu[75|80|90] or cuda[:N] (<see cref="ExecutionBackend.Parse"/>).</summary>
    public ExecutionBackend Backend { get; init; } = ExecutionBackend.Cpu;
    /// <summary>Compute type: fp32, or bf16/fp16 mixed precision (kernel devices only; see <see cref="MixedPrecision"/>).</summary>
    public DType Compute { get; init; } = DType.F32;
    /// <summary>On a kernel device: the context to run in (shared with other sessions, weights resident once); null = a device of its own.</summary>
    public DeviceContext? Context { get; init; }
}

/// <summary>
/// The engine's entry point for inference: load an ONNX graph, specialise it to input shapes,
/// fuse, plan memory, execute on a backend (the CPU by default).
/// </summary>
public sealed class GraphSession : IDisposable
{
    public ComputeGraph Graph { get; }
    public ExecutionPlan Plan { get; }
    public SpecializeReport Specialization { get; }
    private readonly IPlanExecutor _executor;
    private readonly List<Value> _extra;

    private GraphSession(ComputeGraph g, SpecializeReport report, List<Value> extra, GraphSessionOptions options)
    {
        Graph = g;
        Specialization = report;
        _extra = extra;
        Plan = ExecutionPlan.Create(g);
        _executor = options.Backend.CreateExecutor(Plan, options.Seed, options.UseFastKernels, options.Context);
    }

    public static GraphSession Create(string modelPath, IReadOnlyDictionary<string, int[]> inputShapes, GraphSessionOptions? options = null)
    {
        var g = OnnxImporter.Load(modelPath);
        try { return Create(g, inputShapes, options); }
        catch { foreach (var o in g.Owners) o.Dispose(); throw; }
    }

    /// <summary>Specialises and plans <paramref name="g"/> (modified in place; the session owns it).</summary>
    public static GraphSession Create(ComputeGraph g, IReadOnlyDictionary<string, int[]> inputShapes, GraphSessionOptions? options = null)
    {
        options ??= new GraphSessionOptions();
        var extra = GraphPasses.KeepValues(g, options.ExtraOutputs);
        var report = GraphPasses.Prepare(g, inputShapes, options.Fuse);
        GraphPasses.ApplyPrecision(g, options.Compute, options.Backend);
        return new GraphSession(g, report, extra, options);
    }

    public string BackendName => _executor.BackendName;
    public bool Profile { get => _executor.Profile; set => _executor.Profile = value; }
    /// <summary>The backend's executor of this session's plan (its profile, its plan).</summary>
    public IPlanExecutor Executor => _executor;
    public IReadOnlyDictionary<string, double> OpSeconds => _executor.OpSeconds;

    /// <summary>Runs the graph; the result holds the graph outputs and the extra outputs, by name.</summary>
    public Dictionary<string, Tensor> Run(IReadOnlyDictionary<string, Tensor> inputs) => _executor.Run(inputs);

    public void Dispose()
    {
        _executor.Dispose();
        foreach (var o in Graph.Owners) o.Dispose();
    }
}

/// <summary>The standard pass pipeline, shared by inference and training.</summary>
public static class GraphPasses
{
    /// <summary>Makes the named values graph outputs so no pass removes or fuses them away.</summary>
    public static List<Value> KeepValues(ComputeGraph g, IEnumerable<string> names)
    {
        var result = new List<Value>();
        foreach (var name in names)
        {
            var v = g.FindValue(name) ?? throw new CudaDreamException($"{g.Source}: the graph has no value named '{name}'");
            if (!g.Outputs.Contains(v)) g.Outputs.Add(v);
            result.Add(v);
        }
        return result;
    }

    /// <summary>
    /// Rewrites a prepared graph to compute in <paramref name="compute"/> (bf16/fp16, <paramref name="masters"/> kept fp32);
    /// fp32 leaves it as it is. The CPU backend is the fp32 oracle: reduced precision there is an error.
    /// </summary>
    public static void ApplyPrecision(ComputeGraph g, DType compute, ExecutionBackend backend, IReadOnlyCollection<Value>? masters = null)
    {
        if (compute == DType.F32) return;
        if (!MixedPrecision.IsReduced(compute)) throw new CudaDreamException($"--dtype {compute}: the engine computes in fp32, bf16 or fp16");
        if (backend.Kind == ExecutionBackend.BackendKind.Cpu)
            throw new CudaDreamException($"--dtype {ParseDType.Name(compute)} needs a kernel device (--backend emu or cuda): the CPU backend is the fp32 reference");
        MixedPrecision.Apply(g, compute, masters);
    }

    public static SpecializeReport Prepare(ComputeGraph g, IReadOnlyDictionary<string, int[]> inputShapes, bool fuse)
    {
        if (Precision.HasHalfTypes(g))
        {
            Precision.UpcastToFloat32(g);
            // The half-precision file pages were read once to widen them: keep only the fp32 copies resident.
            foreach (var model in g.Owners.OfType<Formats.OnnxModel>()) model.ReleaseResidentPages();
        }
        var report = Specializer.Specialize(g, inputShapes, CpuEvaluator.Instance);
        Simplifier.Run(g);
        if (fuse) Fuser.Run(g);
        g.RemoveDeadNodes();
        return report;
    }
}
