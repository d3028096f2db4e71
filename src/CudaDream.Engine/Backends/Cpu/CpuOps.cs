using CudaDream.Engine.Backends.Cpu.Ops;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Tensors;

namespace CudaDream.Engine.Backends.Cpu;

/// <summary>Runs one node on the CPU: inputs and preallocated outputs as tensors.</summary>
public delegate void CpuOpImpl(Node node, Tensor?[] inputs, Tensor[] outputs, CpuContext context);

/// <summary>The CPU backend's op table: every op of <see cref="Graph.Ops.OpSchemas"/> has an implementation here.</summary>
public static class CpuOps
{
    private static readonly Dictionary<string, CpuOpImpl> Table = Build();

    private static Dictionary<string, CpuOpImpl> Build()
    {
        var t = new Dictionary<string, CpuOpImpl>(StringComparer.Ordinal);
        ElementwiseOps.Register(t);
        ShapeOps.Register(t);
        ReduceOps.Register(t);
        NnOps.Register(t);
        FusedOpsCpu.Register(t);
        GradientOpsCpu.Register(t);
        return t;
    }

    public static bool Supports(string op) => Table.ContainsKey(op);

    public static void Run(Node node, Tensor?[] inputs, Tensor[] outputs, CpuContext context)
    {
        if (!Table.TryGetValue(node.Op, out var impl)) throw new GraphException(node, $"op type '{node.Op}' has no CPU implementation");
        impl(node, inputs, outputs, context);
    }
}

/// <summary>Constant folding on the CPU: evaluates a node whose inputs are all known.</summary>
public sealed class CpuEvaluator : IConstantEvaluator
{
    public static CpuEvaluator Instance { get; } = new();

    public Tensor[] Evaluate(Node node)
    {
        var inputs = node.Inputs.Select(v => v == null ? null : v.Constant ?? (v.Splat != null ? Specializer.MaterializeSplat(v) : throw new GraphException(node, $"input '{v.Name}' is not constant"))).ToArray();
        var outputs = node.Outputs.Select(o => Tensor.Zeros(o.DType, o.Shape!)).ToArray();
        CpuOps.Run(node, inputs, outputs, CpuContext.Reference);
        return outputs;
    }
}
