using CudaDream.Engine;

namespace CudaDream.Cli;

/// <summary>Backend names accepted by --backend.</summary>
internal static class Backends
{
    public static readonly string[] Known = { "cpu" };

    public static void Require(string backend)
    {
        if (!Known.Contains(backend))
            throw new CudaDreamException($"--backend '{backend}' is not available in this build (available: {string.Join(", ", Known)})");
    }
}
