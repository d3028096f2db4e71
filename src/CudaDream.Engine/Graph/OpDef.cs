namespace CudaDream.Engine.Graph;

/// <summary>
/// Computes the gradients of a node's inputs from the gradients of its outputs.
/// <paramref name="dy"/> holds one gradient per output (null where an output does not reach the loss);
/// the result holds one per input (null where not needed or not defined, e.g. shape operands).
/// </summary>
public delegate Value?[] GradRule(Node node, Value?[] dy, bool[] needed, GradBuilder b);

/// <summary>
/// What the graph layer knows of one op: its shape rule, whether it may be constant-folded, whether it is a
/// view, its multiply-add count (FLOPs = 2 × MACs), what its forward node keeps for the backward and its
/// gradient rule. Backends see more of the same object: an op home (<c>Engine/Ops/&lt;Op&gt;/</c>) defines
/// one instance per op name that also carries the op's CPU implementation and device launcher; the graph
/// layer reads only these members, so it knows no backend (DESIGN.md, "Layers").
/// </summary>
public class OpDef
{
    public required string Name { get; init; }

    /// <summary>Sets every output's dtype and static shape from the inputs' (and constant operands').</summary>
    public required Action<Node> InferShapes { get; init; }

    public Func<Node, long>? MultiplyAdds { get; init; }

    /// <summary>False for random draws: never constant-folded.</summary>
    public bool Deterministic { get; init; } = true;

    /// <summary>The output is the input's bytes under another shape (no data movement).</summary>
    public bool IsView { get; init; }

    /// <summary>
    /// How many outputs the forward node has once it is differentiated: the extra ones hold what its
    /// backward reads instead of recomputing (mean/rstd of a norm, the log-sum-exp of attention). 0: none.
    /// </summary>
    public int SavedOutputs { get; init; }

    /// <summary>Null: the op has no gradient (an error only when it lies between a parameter and the loss).</summary>
    public GradRule? Gradient { get; init; }

    /// <summary>
    /// Rewrites a node of this op, before differentiation, into the op whose backward serves it
    /// (InstanceNormalization → GroupNorm with a group per channel); null: the node stays as it is.
    /// </summary>
    public Action<Node>? PrepareForGradient { get; init; }

    /// <summary>
    /// Inputs that stay fp32 when the graph computes in bf16 or fp16 (<see cref="MixedPrecision"/>): normalisation
    /// parameters and statistics, a convolution's bias, the loss weights, timesteps — what the kernels read as fp32.
    /// </summary>
    public IReadOnlyList<int> Float32Inputs { get; init; } = [];

    public override string ToString() => Name;
}
