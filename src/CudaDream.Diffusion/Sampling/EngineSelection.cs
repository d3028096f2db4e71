using CudaDream.Diffusion.Sampling.Engines;
using CudaDream.Engine;

namespace CudaDream.Diffusion.Sampling;

/// <summary>
/// Resolves <see cref="SamplerEngine"/> to an engine and says which in one line. <c>auto</c> prefers ONNX Runtime
/// on CUDA, then CudaDream's engine on CUDA, then ONNX Runtime on the CPU.
/// </summary>
public static class EngineSelection
{
    private static readonly Dictionary<int, string?> CudaProbe = new();
    private static readonly Dictionary<int, string?> DeviceProbe = new();

    /// <summary>Null when ONNX Runtime's CUDA execution provider works on this device (probed once per process), else why not.</summary>
    public static string? OrtCudaUnavailableReason(int device)
    {
        lock (CudaProbe)
        {
            if (!CudaProbe.TryGetValue(device, out var reason)) CudaProbe[device] = reason = OrtPipelineEngine.CudaUnavailableReason(device);
            return reason;
        }
    }

    /// <summary>Null when CudaDream's CUDA backend opens GPU <paramref name="device"/> (driver, NVRTC, cuBLAS; probed once), else why not.</summary>
    public static string? CudaDreamCudaUnavailableReason(int device)
    {
        lock (DeviceProbe)
        {
            if (DeviceProbe.TryGetValue(device, out var known)) return known;
            string? reason = null;
            try { using var d = ExecutionBackend.Parse(device == 0 ? "cuda" : $"cuda:{device}").OpenDevice(); }
            catch (CudaDreamException e) { reason = e.Message.Split('\n')[0]; }
            catch (DllNotFoundException e) { reason = e.Message.Split('\n')[0]; }
            return DeviceProbe[device] = reason;
        }
    }

    /// <summary>
    /// CudaDream's engine where <paramref name="options"/> says (<see cref="SamplerOptions.Backend"/>), else on CUDA when it
    /// opens; null when neither (the CPU then).
    /// </summary>
    private static IGraphBackend? DeviceBackend(SamplerOptions options, out string? why)
    {
        why = null;
        if (options.Backend is { } b)
            return b.Kind == ExecutionBackend.BackendKind.Cpu ? null : new DeviceGraphBackend(b, options.Compute, options.Context);
        why = CudaDreamCudaUnavailableReason(options.CudaDevice);
        if (why != null) return null;
        var cuda = ExecutionBackend.Parse(options.CudaDevice == 0 ? "cuda" : $"cuda:{options.CudaDevice}");
        return new DeviceGraphBackend(cuda, options.Compute, options.Context);
    }

    /// <summary>A factory for the chosen engine (an engine is made per round) and the line that says which it is and why.</summary>
    public static (Func<PipelinePlan, IPipelineEngine> Create, string Line) Choose(SamplerOptions options)
    {
        switch (options.Engine)
        {
            case SamplerEngine.CudaDream:
                {
                    IGraphBackend backend = DeviceBackend(options, out _) ?? new CpuGraphBackend();
                    return (plan => new GraphPipelineEngine(plan, backend), $"engine: CudaDream engine, {backend.Name} backend");
                }
            case SamplerEngine.Ort:
                {
                    var reason = OrtCudaUnavailableReason(options.CudaDevice);
                    int? device = reason == null ? options.CudaDevice : null;
                    return (plan => new OrtPipelineEngine(plan, device, options.Threads),
                        reason == null ? $"engine: ONNX Runtime, CUDA execution provider (device {options.CudaDevice})"
                                       : $"engine: ONNX Runtime, CPU execution provider (CUDA execution provider unavailable: {reason})");
                }
            case SamplerEngine.Auto:
                {
                    var reason = OrtCudaUnavailableReason(options.CudaDevice);
                    if (reason == null)
                        return (plan => new OrtPipelineEngine(plan, options.CudaDevice, options.Threads), $"engine: ONNX Runtime, CUDA execution provider (device {options.CudaDevice})");
                    // auto never picks the emulator (a checking tool) nor the CPU engine over ONNX Runtime's CPU one.
                    var cuda = options.Backend is { Kind: ExecutionBackend.BackendKind.Emu or ExecutionBackend.BackendKind.Cpu } ? null : DeviceBackend(options, out var why);
                    if (cuda != null)
                        return (plan => new GraphPipelineEngine(plan, cuda), $"engine: CudaDream engine, {cuda.Name} backend (ONNX Runtime CUDA unavailable: {reason})");
                    return (plan => new OrtPipelineEngine(plan, null, options.Threads),
                        $"engine: ONNX Runtime, CPU execution provider (no GPU engine available: ONNX Runtime CUDA: {reason}" +
                        (options.Backend == null ? $"; CudaDream CUDA: {CudaDreamCudaUnavailableReason(options.CudaDevice)})" : ")"));
                }
            default:
                throw new CudaDreamException($"unknown engine {options.Engine}");
        }
    }

    /// <summary>"auto", "ort", "cudadream" (the <c>--engine</c> values).</summary>
    public static SamplerEngine Parse(string text) => text.ToLowerInvariant() switch
    {
        "auto" => SamplerEngine.Auto,
        "ort" or "onnxruntime" => SamplerEngine.Ort,
        "cudadream" or "engine" => SamplerEngine.CudaDream,
        _ => throw new CudaDreamException($"--engine {text}: choose auto, ort or cudadream"),
    };
}
