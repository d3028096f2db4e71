using CudaDream.Engine.Graph;
using CudaDream.Engine.Tensors;

namespace CudaDream.Engine.Backends.Cpu;

/// <summary>Runs one node on the CPU: inputs and preallocated outputs as tensors.</summary>
public delegate void CpuOpImpl(Node node, Tensor?[] inputs, Tensor[] outputs, CpuContext context);

/// <summary>An op definition that runs on the CPU backend (every op of an op home does: the CPU is the oracle).</summary>
public interface ICpuOp
{
    CpuOpImpl Cpu { get; }
}

/// <summary>The CPU backend's view of the op registry.</summary>
public static class CpuOps
{
    public static bool Supports(string op) => OpRegistry.TryGet(op) is ICpuOp;

    public static void Run(Node node, Tensor?[] inputs, Tensor[] outputs, CpuContext context)
    {
        if (OpRegistry.TryGet(node.Op) is not ICpuOp op) throw new GraphException(node, $"op type '{node.Op}' has no CPU implementation");
        op.Cpu(node, inputs, outputs, context);
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
