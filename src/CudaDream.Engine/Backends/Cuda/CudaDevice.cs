using System.Runtime.InteropServices;
using System.Text;
using CudaDream.Engine.Backends.Cuda.Interop;
using CudaDream.Engine.Tensors;

namespace CudaDream.Engine.Backends.Cuda;

/// <summary>
/// A CUDA GPU as an <see cref="IKernelDevice"/>: the primary context (shared with ONNX Runtime),
/// one non-blocking stream, kernels from kernels/*.cu compiled by NVRTC at first use (per file,
/// cached on disk), GEMMs through cuBLAS (fp32 with full fp32 compute; bf16/fp16 on tensor cores, fp32 accumulation)
/// with a workspace of its own (so a stream capture allocates nothing), CUDA graphs from stream capture.
/// </summary>
public sealed unsafe class CudaDevice : KernelDevice
{
    /// <summary>cuBLAS's workspace: 32 MiB, what NVIDIA recommends for Hopper (4 MiB would do before it).</summary>
    private const long CublasWorkspaceBytes = 32L << 20;
    private readonly DevicePtr _cublasWorkspace;
    private readonly PrimaryContextHandle _context;
    private readonly CudaStreamHandle _stream;
    private readonly CublasHandle _cublas;
    private readonly string _arch;
    private readonly bool _ptx;
    private readonly string? _cacheDir;
    private readonly Dictionary<string, CudaModuleHandle> _modules = new();
    private readonly Dictionary<string, nint> _functions = new();
    private readonly Dictionary<nint, int> _sharedOptIn = new();

    public override string Name { get; }
    public override int ComputeCapability { get; }

    private CudaDevice(int ordinal, string? cacheDir)
    {
        NativeLibraries.Require(NativeLibraries.Driver);
        CudaErrors.Check(CudaDriver.Init(0), "cuInit");
        CudaErrors.Check(CudaDriver.DeviceGetCount(out var count), "cuDeviceGetCount");
        if (ordinal >= count) throw new CudaDreamException($"CUDA device {ordinal} does not exist ({count} device(s) found)");
        CudaErrors.Check(CudaDriver.DeviceGet(out var dev, ordinal), "cuDeviceGet");
        CudaErrors.Check(CudaDriver.DeviceGetAttribute(out var major, CudaDriver.AttrComputeCapabilityMajor, dev), "cuDeviceGetAttribute");
        CudaErrors.Check(CudaDriver.DeviceGetAttribute(out var minor, CudaDriver.AttrComputeCapabilityMinor, dev), "cuDeviceGetAttribute");
        ComputeCapability = major * 10 + minor;
        var name = new byte[256];
        fixed (byte* p = name) CudaErrors.Check(CudaDriver.DeviceGetName(p, name.Length, dev), "cuDeviceGetName");
        NativeLibraries.Require(NativeLibraries.Nvrtc);
        NativeLibraries.Require(NativeLibraries.Cublas);
        _context = new PrimaryContextHandle(dev);
        MakeCurrent();
        _stream = new CudaStreamHandle();
        _cublas = new CublasHandle(_stream.DangerousGetHandle());
        _cublasWorkspace = AllocateCore(CublasWorkspaceBytes);
        Counters.Allocated(_cublasWorkspace, CublasWorkspaceBytes); // device memory like any other: counted in the peak
        CudaErrors.Check(CuBlas.SetWorkspace(_cublas.DangerousGetHandle(), _cublasWorkspace.Address, (nuint)CublasWorkspaceBytes), "cublasSetWorkspace_v2");
        (_arch, _ptx) = KernelCompiler.TargetFor(ComputeCapability);
        _cacheDir = cacheDir;
        Name = $"cuda sm_{ComputeCapability} ({Encoding.UTF8.GetString(name).TrimEnd('\0')})";
    }

    /// <summary>Opens GPU <paramref name="ordinal"/>; throws a one-line error naming a missing library.</summary>
    public static CudaDevice Open(int ordinal = 0, string? cacheDir = null) => new(ordinal, cacheDir);

    private void MakeCurrent() => CudaErrors.Check(CudaDriver.CtxSetCurrent(_context.DangerousGetHandle()), "cuCtxSetCurrent");
    private nint Stream => _stream.DangerousGetHandle();

    protected override DevicePtr AllocateCore(long bytes)
    {
        MakeCurrent();
        CudaErrors.Check(CudaDriver.MemAlloc(out var p, (nuint)Math.Max(1, bytes)), "cuMemAlloc_v2");
        return new DevicePtr(p);
    }

    protected override void FreeCore(DevicePtr ptr)
    {
        MakeCurrent();
        CudaErrors.Check(CudaDriver.MemFree(ptr.Address), "cuMemFree_v2");
    }

    protected override nint AllocateHostCore(long bytes)
    {
        MakeCurrent();
        CudaErrors.Check(CudaDriver.MemHostAlloc(out var p, (nuint)bytes, 0), "cuMemHostAlloc");
        return p;
    }

    protected override void FreeHostCore(nint pointer)
    {
        MakeCurrent();
        CudaErrors.Check(CudaDriver.MemFreeHost(pointer), "cuMemFreeHost");
    }

    protected override void CopyToDeviceCore(DevicePtr dst, ReadOnlySpan<byte> src)
    {
        MakeCurrent();
        fixed (byte* p = src) CudaErrors.Check(CudaDriver.MemcpyHtoDAsync(dst.Address, p, (nuint)src.Length, Stream), "cuMemcpyHtoDAsync_v2");
        SynchronizeCore(); // the span may be gone once we return
    }

    protected override void CopyToHostCore(Span<byte> dst, DevicePtr src)
    {
        MakeCurrent();
        fixed (byte* p = dst) CudaErrors.Check(CudaDriver.MemcpyDtoHAsync(p, src.Address, (nuint)dst.Length, Stream), "cuMemcpyDtoHAsync_v2");
        SynchronizeCore();
    }

    protected override void CopyToDeviceAsyncCore(DevicePtr dst, nint src, long bytes) =>
        CudaErrors.Check(CudaDriver.MemcpyHtoDAsync(dst.Address, (void*)src, (nuint)bytes, Stream), "cuMemcpyHtoDAsync_v2");

    protected override void CopyToHostAsyncCore(nint dst, DevicePtr src, long bytes) =>
        CudaErrors.Check(CudaDriver.MemcpyDtoHAsync((void*)dst, src.Address, (nuint)bytes, Stream), "cuMemcpyDtoHAsync_v2");

    protected override void CopyDeviceToDeviceCore(DevicePtr dst, DevicePtr src, long bytes) =>
        CudaErrors.Check(CudaDriver.MemcpyDtoDAsync(dst.Address, src.Address, (nuint)bytes, Stream), "cuMemcpyDtoDAsync_v2");

    protected override void MemsetCore(DevicePtr dst, byte value, long bytes) =>
        CudaErrors.Check(CudaDriver.MemsetD8Async(dst.Address, value, (nuint)bytes, Stream), "cuMemsetD8Async");

    protected override void LaunchCore(string kernel, Dim3 grid, Dim3 block, int dynamicSharedBytes, KernelArgs args)
    {
        MakeCurrent();
        var f = Function(kernel);
        if (dynamicSharedBytes > 48 * 1024 && _sharedOptIn.GetValueOrDefault(f) < dynamicSharedBytes)
        {
            CudaErrors.Check(CudaDriver.FuncSetAttribute(f, CudaDriver.FuncAttrMaxDynamicSharedBytes, dynamicSharedBytes), "cuFuncSetAttribute");
            _sharedOptIn[f] = dynamicSharedBytes;
        }
        CuResult r;
        using (var pinned = args.Pin())
            r = CudaDriver.LaunchKernel(f, grid.X, grid.Y, grid.Z, block.X, block.Y, block.Z, (uint)dynamicSharedBytes, Stream, pinned.Pointers, 0);
        if (r != CuResult.Success) throw new CudaException("CUDA driver", $"cuLaunchKernel({kernel}, grid {grid}, block {block}, smem {dynamicSharedBytes})", (int)r, CudaDriver.ErrorName(r));
    }

    protected override void GemmCore(in GemmArgs g)
    {
        MakeCurrent();
        float alpha = g.Alpha, beta = g.Beta;
        // fp32: full fp32 arithmetic (the reference mode, no TF32); bf16/fp16 inputs: tensor cores, fp32 accumulation.
        int compute = g.Type == DType.F32 ? CuBlas.Compute32FPedantic : CuBlas.Compute32F;
        CudaErrors.Check(CuBlas.GemmStridedBatchedEx(_cublas.DangerousGetHandle(), (int)g.TransA, (int)g.TransB, g.M, g.N, g.K,
            &alpha, g.A.Address, DataType(g.Type), g.Lda, g.StrideA, g.B.Address, DataType(g.Type), g.Ldb, g.StrideB,
            &beta, g.C.Address, DataType(g.OutputType), g.Ldc, g.StrideC, g.Batch, compute, CuBlas.GemmDefault),
            "cublasGemmStridedBatchedEx");
    }

    private static int DataType(DType t) => t switch
    {
        DType.F32 => CuBlas.CudaR32F, DType.F16 => CuBlas.CudaR16F, DType.BF16 => CuBlas.CudaR16BF,
        _ => throw new NotSupportedException($"gemm in {t}"),
    };

    protected override void SynchronizeCore()
    {
        MakeCurrent();
        CudaErrors.Check(CudaDriver.StreamSynchronize(Stream), "cuStreamSynchronize");
    }

    protected override void BeginCaptureCore()
    {
        MakeCurrent();
        CudaErrors.Check(CudaDriver.StreamBeginCapture(Stream, 1 /* CU_STREAM_CAPTURE_MODE_THREAD_LOCAL */), "cuStreamBeginCapture_v2");
    }

    protected override object EndCaptureCore()
    {
        MakeCurrent();
        CudaErrors.Check(CudaDriver.StreamEndCapture(Stream, out var graph), "cuStreamEndCapture");
        try
        {
            CudaErrors.Check(CudaDriver.GraphInstantiateWithFlags(out var exec, graph, 0), "cuGraphInstantiateWithFlags");
            return exec;
        }
        finally { CudaDriver.GraphDestroy(graph); }
    }

    protected override void ReplayCore(object graph)
    {
        MakeCurrent();
        CudaErrors.Check(CudaDriver.GraphLaunch((nint)graph, Stream), "cuGraphLaunch");
    }

    protected override void DestroyGraphCore(object graph) => CudaDriver.GraphExecDestroy((nint)graph);

    private nint Function(string alias)
    {
        if (_functions.TryGetValue(alias, out var f)) return f;
        var export = KernelSources.Find(alias);
        if (!_modules.TryGetValue(export.File, out var module))
        {
            var file = KernelSources.KernelFiles.First(k => k.Name == export.File);
            var compiled = KernelCompiler.Compile(file, _arch, _cacheDir);
            module = CudaModuleHandle.Load(compiled.Image);
            _modules[export.File] = module;
            foreach (var (a, lowered) in compiled.LoweredNames)
            {
                CudaErrors.Check(CudaDriver.ModuleGetFunction(out var fn, module.DangerousGetHandle(), lowered), $"cuModuleGetFunction({a})");
                _functions[a] = fn;
            }
        }
        return _functions[alias];
    }

    protected override void DisposeCore()
    {
        foreach (var m in _modules.Values) m.Dispose();
        _modules.Clear();
        _cublas.Dispose();
        if (!_cublasWorkspace.IsNull) CudaDriver.MemFree(_cublasWorkspace.Address);
        _stream.Dispose();
        _context.Dispose();
    }
}
