using System.Runtime.InteropServices;
using System.Runtime.InteropServices.Marshalling;

namespace CudaDream.Engine.Backends.Cuda.Interop;

public enum CuResult
{
    Success = 0, InvalidValue = 1, OutOfMemory = 2, NotInitialized = 3, Deinitialized = 4, NoDevice = 100,
    InvalidDevice = 101, InvalidImage = 200, InvalidContext = 201, NoBinaryForGpu = 209, InvalidPtx = 218,
    UnsupportedPtxVersion = 222, NotFound = 500, IllegalAddress = 700, LaunchOutOfResources = 701, LaunchTimeout = 702,
    LaunchFailed = 719,
}

/// <summary>
/// CUDA driver API, the versioned exports (cuMemAlloc_v2 ...) that the unversioned header names map to.
/// The engine works in the device's primary context, the one ONNX Runtime's CUDA EP also uses, so
/// both share memory and streams in one process.
/// </summary>
public static partial class CudaDriver
{
    private const string L = NativeLibraries.Driver;

    public const int AttrComputeCapabilityMajor = 75, AttrComputeCapabilityMinor = 76, AttrMultiprocessorCount = 16;
    public const int FuncAttrMaxDynamicSharedBytes = 8, FuncAttrNumRegs = 4, FuncAttrLocalBytes = 3, FuncAttrSharedBytes = 1;

    [LibraryImport(L, EntryPoint = "cuInit")] public static partial CuResult Init(uint flags);
    [LibraryImport(L, EntryPoint = "cuDriverGetVersion")] public static partial CuResult DriverGetVersion(out int version);
    [LibraryImport(L, EntryPoint = "cuDeviceGetCount")] public static partial CuResult DeviceGetCount(out int count);
    [LibraryImport(L, EntryPoint = "cuDeviceGet")] public static partial CuResult DeviceGet(out int device, int ordinal);
    [LibraryImport(L, EntryPoint = "cuDeviceGetAttribute")] public static partial CuResult DeviceGetAttribute(out int value, int attribute, int device);
    [LibraryImport(L, EntryPoint = "cuDeviceGetName")] public static unsafe partial CuResult DeviceGetName(byte* name, int length, int device);
    [LibraryImport(L, EntryPoint = "cuDevicePrimaryCtxRetain")] public static partial CuResult PrimaryCtxRetain(out nint context, int device);
    [LibraryImport(L, EntryPoint = "cuDevicePrimaryCtxRelease_v2")] public static partial CuResult PrimaryCtxRelease(int device);
    [LibraryImport(L, EntryPoint = "cuCtxSetCurrent")] public static partial CuResult CtxSetCurrent(nint context);
    [LibraryImport(L, EntryPoint = "cuMemAlloc_v2")] public static partial CuResult MemAlloc(out ulong ptr, nuint bytes);
    [LibraryImport(L, EntryPoint = "cuMemFree_v2")] public static partial CuResult MemFree(ulong ptr);
    [LibraryImport(L, EntryPoint = "cuMemGetInfo_v2")] public static partial CuResult MemGetInfo(out nuint free, out nuint total);
    [LibraryImport(L, EntryPoint = "cuMemcpyHtoDAsync_v2")] public static unsafe partial CuResult MemcpyHtoDAsync(ulong dst, void* src, nuint bytes, nint stream);
    [LibraryImport(L, EntryPoint = "cuMemcpyDtoHAsync_v2")] public static unsafe partial CuResult MemcpyDtoHAsync(void* dst, ulong src, nuint bytes, nint stream);
    [LibraryImport(L, EntryPoint = "cuMemcpyDtoDAsync_v2")] public static partial CuResult MemcpyDtoDAsync(ulong dst, ulong src, nuint bytes, nint stream);
    [LibraryImport(L, EntryPoint = "cuMemsetD8Async")] public static partial CuResult MemsetD8Async(ulong dst, byte value, nuint count, nint stream);
    [LibraryImport(L, EntryPoint = "cuMemHostAlloc")] public static partial CuResult MemHostAlloc(out nint pointer, nuint bytes, uint flags);
    [LibraryImport(L, EntryPoint = "cuMemFreeHost")] public static partial CuResult MemFreeHost(nint pointer);
    /// <summary>mode: CU_STREAM_CAPTURE_MODE_THREAD_LOCAL (1) refuses unsafe calls (syncs, allocations) from this thread while capturing.</summary>
    [LibraryImport(L, EntryPoint = "cuStreamBeginCapture_v2")] public static partial CuResult StreamBeginCapture(nint stream, int mode);
    [LibraryImport(L, EntryPoint = "cuStreamEndCapture")] public static partial CuResult StreamEndCapture(nint stream, out nint graph);
    [LibraryImport(L, EntryPoint = "cuGraphInstantiateWithFlags")] public static partial CuResult GraphInstantiateWithFlags(out nint graphExec, nint graph, ulong flags);
    [LibraryImport(L, EntryPoint = "cuGraphDestroy")] public static partial CuResult GraphDestroy(nint graph);
    [LibraryImport(L, EntryPoint = "cuGraphExecDestroy")] public static partial CuResult GraphExecDestroy(nint graphExec);
    [LibraryImport(L, EntryPoint = "cuGraphLaunch")] public static partial CuResult GraphLaunch(nint graphExec, nint stream);
    [LibraryImport(L, EntryPoint = "cuStreamCreate")] public static partial CuResult StreamCreate(out nint stream, uint flags);
    [LibraryImport(L, EntryPoint = "cuStreamDestroy_v2")] public static partial CuResult StreamDestroy(nint stream);
    [LibraryImport(L, EntryPoint = "cuStreamSynchronize")] public static partial CuResult StreamSynchronize(nint stream);
    [LibraryImport(L, EntryPoint = "cuEventCreate")] public static partial CuResult EventCreate(out nint ev, uint flags);
    [LibraryImport(L, EntryPoint = "cuEventDestroy_v2")] public static partial CuResult EventDestroy(nint ev);
    [LibraryImport(L, EntryPoint = "cuEventRecord")] public static partial CuResult EventRecord(nint ev, nint stream);
    [LibraryImport(L, EntryPoint = "cuEventSynchronize")] public static partial CuResult EventSynchronize(nint ev);
    [LibraryImport(L, EntryPoint = "cuEventElapsedTime")] public static partial CuResult EventElapsedTime(out float ms, nint start, nint end);
    [LibraryImport(L, EntryPoint = "cuModuleLoadData")] public static unsafe partial CuResult ModuleLoadData(out nint module, void* image);
    [LibraryImport(L, EntryPoint = "cuModuleUnload")] public static partial CuResult ModuleUnload(nint module);
    [LibraryImport(L, EntryPoint = "cuModuleGetFunction", StringMarshalling = StringMarshalling.Utf8)]
    public static partial CuResult ModuleGetFunction(out nint function, nint module, string name);
    [LibraryImport(L, EntryPoint = "cuFuncGetAttribute")] public static partial CuResult FuncGetAttribute(out int value, int attribute, nint function);
    [LibraryImport(L, EntryPoint = "cuFuncSetAttribute")] public static partial CuResult FuncSetAttribute(nint function, int attribute, int value);
    [LibraryImport(L, EntryPoint = "cuLaunchKernel")]
    public static partial CuResult LaunchKernel(nint function, uint gridX, uint gridY, uint gridZ, uint blockX, uint blockY, uint blockZ,
        uint sharedBytes, nint stream, nint kernelParams, nint extra);
    [LibraryImport(L, EntryPoint = "cuGetErrorName")] private static partial CuResult GetErrorName(CuResult error, out nint name);

    public static string ErrorName(CuResult r)
    {
        try
        {
            if (GetErrorName(r, out var p) == CuResult.Success && p != 0) return Marshal.PtrToStringUTF8(p) ?? r.ToString();
        }
        catch (DllNotFoundException) { }
        return "CUDA_ERROR_" + r.ToString().ToUpperInvariant();
    }
}

/// <summary>A retained primary context; released when disposed.</summary>
public sealed class PrimaryContextHandle : SafeHandle
{
    public int Device { get; }
    public PrimaryContextHandle(int device) : base(0, true)
    {
        Device = device;
        CudaErrors.Check(CudaDriver.PrimaryCtxRetain(out var ctx, device), "cuDevicePrimaryCtxRetain");
        SetHandle(ctx);
    }
    public override bool IsInvalid => handle == 0;
    protected override bool ReleaseHandle() => CudaDriver.PrimaryCtxRelease(Device) == CuResult.Success;
}

public sealed class CudaStreamHandle : SafeHandle
{
    public CudaStreamHandle() : base(0, true)
    {
        CudaErrors.Check(CudaDriver.StreamCreate(out var s, 1 /* CU_STREAM_NON_BLOCKING */), "cuStreamCreate");
        SetHandle(s);
    }
    public override bool IsInvalid => handle == 0;
    protected override bool ReleaseHandle() => CudaDriver.StreamDestroy(handle) == CuResult.Success;
}

public sealed class CudaEventHandle : SafeHandle
{
    public CudaEventHandle() : base(0, true)
    {
        CudaErrors.Check(CudaDriver.EventCreate(out var e, 0), "cuEventCreate");
        SetHandle(e);
    }
    public override bool IsInvalid => handle == 0;
    protected override bool ReleaseHandle() => CudaDriver.EventDestroy(handle) == CuResult.Success;
}

public sealed class CudaModuleHandle : SafeHandle
{
    private CudaModuleHandle() : base(0, true) { }
    public static unsafe CudaModuleHandle Load(byte[] image)
    {
        var h = new CudaModuleHandle();
        var data = image.Length > 0 && image[^1] == 0 ? image : [.. image, 0];
        nint m;
        fixed (byte* p = data) CudaErrors.Check(CudaDriver.ModuleLoadData(out m, p), "cuModuleLoadData");
        h.SetHandle(m);
        return h;
    }
    public override bool IsInvalid => handle == 0;
    protected override bool ReleaseHandle() => CudaDriver.ModuleUnload(handle) == CuResult.Success;
}
