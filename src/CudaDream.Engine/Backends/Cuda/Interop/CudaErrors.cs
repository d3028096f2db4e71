namespace CudaDream.Engine.Backends.Cuda.Interop;

/// <summary>A failed CUDA driver, NVRTC or cuBLAS call; the message names the call and the status.</summary>
public sealed class CudaException : CudaDreamException
{
    public string Library { get; }
    public string Call { get; }
    public int Status { get; }

    public CudaException(string library, string call, int status, string statusName)
        : base($"{library} {call} failed: {statusName} ({status})")
    {
        Library = library; Call = call; Status = status;
    }
}

/// <summary>The one error funnel: every binding checks its status here.</summary>
public static class CudaErrors
{
    public static void Check(CuResult r, string call)
    {
        if (r != CuResult.Success) throw new CudaException("CUDA driver", call, (int)r, CudaDriver.ErrorName(r));
    }

    public static void Check(NvrtcResult r, string call)
    {
        if (r != NvrtcResult.Success) throw new CudaException("NVRTC", call, (int)r, NvrtcApi.ErrorName(r));
    }

    public static void Check(CublasStatus s, string call)
    {
        if (s != CublasStatus.Success) throw new CudaException("cuBLAS", call, (int)s, "CUBLAS_STATUS_" + s.ToString().ToUpperInvariant());
    }
}
