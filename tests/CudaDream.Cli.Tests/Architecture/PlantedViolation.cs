// A deliberate break of the layering rules, so ArchitectureTests.A_planted_violation_is_caught can show that the rules
// fail when a graph-layer type uses a backend. It lives in the test assembly only; the product rules never load it.
namespace CudaDream.Engine.Graph;

internal static class PlantedViolation
{
    public static object Backend() => Backends.Cpu.CpuContext.Reference;
}
