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
    [ModuleInitializer]
    internal static void Install() => OpRegistry.Install(AllOps);
}
