using System.Runtime.CompilerServices;
using CudaDream.Engine.Graph;

namespace CudaDream.Engine.Ops;

/// <summary>
/// Every op home of the engine — the only list of ops. Adding an op means writing its home and adding it
/// here; the registry the graph layer reads, the executors, the differentiator and the conformance matrix
/// all follow from this table.
/// </summary>
public static class OpCatalog
{
    public static IReadOnlyList<OpHome> Homes { get; } =
    [
        ActivationOps.Home,
        AttentionOps.Home,
        ConvOps.Home,
        ElementwiseOps.Home,
        GroupNormOps.Home,
        LayerNormOps.Home,
        LayoutOps.Home,
        LossOps.Home,
        MatMulOps.Home,
        PadOps.Home,
        RandomOps.Home,
        ReduceOps.Home,
        ResizeOps.Home,
        SoftmaxOps.Home,
        TimestepEmbeddingOps.Home,
    ];

    public static IEnumerable<Op> AllOps => Homes.SelectMany(h => h.Ops);

    /// <summary>Runs when the engine assembly loads, before any code can look an op up.</summary>
    // CA2255 warns libraries off module initializers with effects outside the assembly; this one only fills the
    // assembly's own op table, which must be complete before any graph code (even a constant fold) runs.
#pragma warning disable CA2255
    [ModuleInitializer]
    internal static void Install() => OpRegistry.Install(AllOps);
#pragma warning restore CA2255
}
