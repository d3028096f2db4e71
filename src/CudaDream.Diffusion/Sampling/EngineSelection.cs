using CudaDream.Diffusion.Sampling.Engines;
using CudaDream.Engine;

namespace CudaDream.Diffusion.Sampling;

/// <summary>
/// Resolves <see cref="SamplerEngine"/> to an engine and says which in one line. <c>auto</c> prefers ONNX Runtime
/// on CUDA, then CudaDream's engine on CUDA (its CUDA backend is not part of this build), then ONNX Runtime on
/// the CPU.
/// </summary>
public static class EngineSelection
{
    private static readonly Dictionary<int, string?> CudaProbe = new();

    /// <summary>Null when ONNX Runtime's CUDA execution provider works on this device (probed once per process), else why not.</summary>
    public static string? OrtCudaUnavailableReason(int device)
    {
        lock (CudaProbe)
        {
            if (!CudaProbe.TryGetValue(device, out var reason)) CudaProbe[device] = reason = OrtPipelineEngine.CudaUnavailableReason(device);
            return reason;
        }
    }

    /// <summary>The CudaDream backend for CUDA when one is built in; null now.</summary>
    public static IGraphBackend? CudaDreamCudaBackend() => null;

    /// <summary>A factory for the chosen engine (an engine is made per round) and the line that says which it is and why.</summary>
    public static (Func<PipelinePlan, IPipelineEngine> Create, string Line) Choose(SamplerOptions options)
    {
        switch (options.Engine)
        {
            case SamplerEngine.CudaDream:
                {
                    var backend = CudaDreamCudaBackend() ?? new CpuGraphBackend();
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
                    if (CudaDreamCudaBackend() is { } cuda)
                        return (plan => new GraphPipelineEngine(plan, cuda), $"engine: CudaDream engine, {cuda.Name} backend (ONNX Runtime CUDA unavailable: {reason})");
                    return (plan => new OrtPipelineEngine(plan, null, options.Threads),
                        $"engine: ONNX Runtime, CPU execution provider (no GPU engine available: ONNX Runtime CUDA: {reason}; CudaDream CUDA backend: not in this build)");
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
