using CudaDream.Engine;
using CudaDream.Engine.Backends.Device;
using CudaDream.Engine.Ops;

namespace CudaDream.Cli;

/// <summary>--backend of the verbs that execute graphs: cpu, emu (tier sm_80), emu75, emu80, emu90, cuda, cuda:N.</summary>
internal static class Backends
{
    public const string Help = "cpu (reference), emu (CUDA kernels on the emulator, sm_80; emu75/emu90 for other tiers) or cuda[:N] (GPU N).";

    /// <summary>Parses the option before any file is read, so a wrong name is the first error.</summary>
    public static ExecutionBackend Require(string backend) => ExecutionBackend.Parse(backend);
}
