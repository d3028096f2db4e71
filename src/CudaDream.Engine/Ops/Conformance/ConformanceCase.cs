namespace CudaDream.Engine.Ops;

/// <summary>
/// One check of a kernel device against the CPU reference: a small graph exercising one op family (and
/// so its kernels, launchers and the executor's handling), run on both, every output compared.
/// </summary>
/// <param name="Family">The kernels/*.cu file (op family) the case exercises.</param>
/// <param name="Tolerance">Max |device − cpu| / max |cpu| allowed for float outputs; integer and bool outputs must be equal.</param>
public sealed record ConformanceCase(string Name, string Family, Func<ConformanceGraphBuilder, ConformanceGraph> Build, double Tolerance = 1e-5)
{
    public override string ToString() => Name;
}

/// <summary>
/// The conformance matrix: every op home's cases (<see cref="OpHome.Conformance"/>) — every op the kernel
/// devices implement, forward and backward, on shapes that reach every launch path. The emu tests run it on
/// every tier; device-check runs it on a GPU.
/// </summary>
public static class ConformanceCases
{
    private static readonly Lazy<IReadOnlyList<ConformanceCase>> Cases = new(() =>
        OpCatalog.Homes.Where(h => h.Conformance != null).SelectMany(h => h.Conformance!()).ToList());

    public static IReadOnlyList<ConformanceCase> All => Cases.Value;
}
