using System.Runtime.InteropServices;

namespace CudaDream.Engine.Backends.Cuda.Interop;

public enum CublasStatus
{
    Success = 0, NotInitialized = 1, AllocFailed = 3, InvalidValue = 7, ArchMismatch = 8, MappingError = 11,
    ExecutionFailed = 13, InternalError = 14, NotSupported = 15, LicenseError = 16,
}

/// <summary>
/// cuBLAS v2 API. GEMMs go through cublasGemmStridedBatchedEx with CUBLAS_COMPUTE_32F_PEDANTIC for
/// fp32: full fp32 compute, never TF32 (whatever NVIDIA_TF32_OVERRIDE or the math mode says).
/// </summary>
public static unsafe partial class CuBlas
{
    private const string L = NativeLibraries.Cublas;

    public const int CudaR32F = 0, CudaR16F = 2, CudaR16BF = 14;
    public const int Compute32F = 68, Compute32FPedantic = 69;
    public const int GemmDefault = -1;
    /// <summary>cublasMath_t: the compute type of each call decides (fp32 calls ask for CUBLAS_COMPUTE_32F_PEDANTIC).</summary>
    public const int DefaultMath = 0;

    [LibraryImport(L, EntryPoint = "cublasCreate_v2")] public static partial CublasStatus Create(out nint handle);
    [LibraryImport(L, EntryPoint = "cublasDestroy_v2")] public static partial CublasStatus Destroy(nint handle);
    [LibraryImport(L, EntryPoint = "cublasSetStream_v2")] public static partial CublasStatus SetStream(nint handle, nint stream);
    /// <summary>A workspace of our own, so cuBLAS allocates nothing while a stream is captured into a graph.</summary>
    [LibraryImport(L, EntryPoint = "cublasSetWorkspace_v2")] public static partial CublasStatus SetWorkspace(nint handle, ulong workspace, nuint bytes);
    [LibraryImport(L, EntryPoint = "cublasSetMathMode")] public static partial CublasStatus SetMathMode(nint handle, int mode);
    [LibraryImport(L, EntryPoint = "cublasGemmStridedBatchedEx")]
    public static partial CublasStatus GemmStridedBatchedEx(nint handle, int transa, int transb, int m, int n, int k,
        void* alpha, ulong a, int aType, int lda, long strideA, ulong b, int bType, int ldb, long strideB,
        void* beta, ulong c, int cType, int ldc, long strideC, int batchCount, int computeType, int algo);
}

public sealed class CublasHandle : SafeHandle
{
    public CublasHandle(nint stream) : base(0, true)
    {
        NativeLibraries.Require(NativeLibraries.Cublas);
        CudaErrors.Check(CuBlas.Create(out var h), "cublasCreate_v2");
        SetHandle(h);
        CudaErrors.Check(CuBlas.SetStream(h, stream), "cublasSetStream_v2");
        CudaErrors.Check(CuBlas.SetMathMode(h, CuBlas.DefaultMath), "cublasSetMathMode");
    }
    public override bool IsInvalid => handle == 0;
    protected override bool ReleaseHandle() => CuBlas.Destroy(handle) == CublasStatus.Success;
}
