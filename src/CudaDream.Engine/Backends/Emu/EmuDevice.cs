using System.Runtime.InteropServices;
using CudaDream.Engine.Tensors;

namespace CudaDream.Engine.Backends.Emu;

/// <summary>Where the emulator puts an inaccessible page: none, right after each allocation, or right before.</summary>
public enum EmuGuard { None = 0, After = 1, Before = 2 }

/// <summary>Emulator options: the guard mode, the seed of the thread-order shuffles and shared-memory garbage.</summary>
public sealed record EmuOptions
{
    public int Tier { get; init; } = 800;
    public EmuGuard Guard { get; init; } = EmuGuard.After;
    public ulong Seed { get; init; } = 1;
    /// <summary>Off only to debug a kernel: runs threads in index order.</summary>
    public bool Shuffle { get; init; } = true;
    public string? CacheDir { get; init; }
}

/// <summary>Thrown when an emulated kernel faults, races into a deadlock or breaks a CUDA rule.</summary>
public sealed class EmuKernelException(string message) : CudaDreamException(message);

/// <summary>
/// The emulated GPU: device memory is host memory (optionally guarded), kernels are the emulator
/// library's cdk_* trampolines, GEMM is its cuBLAS-semantics reference. Same host code as CUDA.
/// Work is done when it is enqueued; a capture records the calls (arguments copied, host buffers read at
/// replay, as a CUDA graph's memcpy nodes do) and a replay runs them again.
/// </summary>
public sealed unsafe class EmuDevice : KernelDevice
{
    [StructLayout(LayoutKind.Sequential)]
    private struct LaunchConfig
    {
        public uint GridX, GridY, GridZ, BlockX, BlockY, BlockZ, DynamicSharedBytes, Flags;
        public ulong Seed;
    }

    private readonly EmuLibrary _lib;
    private readonly EmuOptions _options;
    private readonly Dictionary<string, nint> _kernels = new();
    private readonly delegate* unmanaged<ulong, int, void*> _alloc;
    private readonly delegate* unmanaged<void*, int> _free;
    private readonly delegate* unmanaged<nint> _lastError;
    private readonly delegate* unmanaged<int, int, int, int, int, int, int, float, void*, int, long, void*, int, long, float, void*, int, long, int, int> _gemm;
    private ulong _launches;
    private List<Action>? _recording;

    public override string Name => $"emu sm_{_lib.Tier / 10}";
    public override int ComputeCapability => _lib.Tier / 10;
    public EmuOptions Options => _options;

    public EmuDevice(EmuOptions? options = null)
    {
        _options = options ?? new EmuOptions();
        _lib = EmuLibrary.Get(_options.Tier, _options.CacheDir);
        _alloc = (delegate* unmanaged<ulong, int, void*>)_lib.Export("emu_alloc");
        _free = (delegate* unmanaged<void*, int>)_lib.Export("emu_free");
        _lastError = (delegate* unmanaged<nint>)_lib.Export("emu_last_error");
        _gemm = (delegate* unmanaged<int, int, int, int, int, int, int, float, void*, int, long, void*, int, long, float, void*, int, long, int, int>)_lib.Export("emu_gemm_ex");
    }

    private string LastError() => Marshal.PtrToStringUTF8(_lastError()) ?? "unknown emulator error";

    /// <summary>Runs <paramref name="work"/> now, or records it while capturing.</summary>
    private void Enqueue(Action work)
    {
        if (_recording != null) _recording.Add(work);
        else work();
    }

    protected override DevicePtr AllocateCore(long bytes)
    {
        var p = _alloc((ulong)Math.Max(0, bytes), (int)_options.Guard);
        if (p == null) throw new OutOfMemoryException($"emu: cannot allocate {bytes} bytes");
        return new DevicePtr((ulong)p);
    }

    protected override void FreeCore(DevicePtr ptr)
    {
        if (_free((void*)ptr.Address) != 0) throw new InvalidOperationException($"emu: {ptr} was not allocated here");
    }

    protected override nint AllocateHostCore(long bytes) => (nint)NativeMemory.AlignedAlloc((nuint)bytes, 256);
    protected override void FreeHostCore(nint pointer) => NativeMemory.AlignedFree((void*)pointer);

    protected override void CopyToDeviceCore(DevicePtr dst, ReadOnlySpan<byte> src) => src.CopyTo(new Span<byte>((void*)dst.Address, src.Length));
    protected override void CopyToHostCore(Span<byte> dst, DevicePtr src) => new ReadOnlySpan<byte>((void*)src.Address, dst.Length).CopyTo(dst);
    protected override void CopyToDeviceAsyncCore(DevicePtr dst, nint src, long bytes) => Enqueue(() => Buffer.MemoryCopy((void*)src, (void*)dst.Address, bytes, bytes));
    protected override void CopyToHostAsyncCore(nint dst, DevicePtr src, long bytes) => Enqueue(() => Buffer.MemoryCopy((void*)src.Address, (void*)dst, bytes, bytes));
    protected override void CopyDeviceToDeviceCore(DevicePtr dst, DevicePtr src, long bytes) => Enqueue(() => Buffer.MemoryCopy((void*)src.Address, (void*)dst.Address, bytes, bytes));
    protected override void MemsetCore(DevicePtr dst, byte value, long bytes) => Enqueue(() => NativeMemory.Fill((void*)dst.Address, (nuint)bytes, value));

    protected override void LaunchCore(string kernel, Dim3 grid, Dim3 block, int dynamicSharedBytes, KernelArgs args)
    {
        if (!_kernels.TryGetValue(kernel, out var fn))
        {
            if (!_lib.TryExport("cdk_" + kernel, out fn)) throw new CudaDreamException($"no kernel exported as '{kernel}' in kernels/*.cu");
            _kernels[kernel] = fn;
        }
        if (_recording == null) { Run(fn, grid, block, dynamicSharedBytes, args); return; }
        var copy = args.Clone(); // cuLaunchKernel copies the argument values at capture time
        _recording.Add(() => Run(fn, grid, block, dynamicSharedBytes, copy));
    }

    private void Run(nint fn, Dim3 grid, Dim3 block, int dynamicSharedBytes, KernelArgs args)
    {
        var cfg = new LaunchConfig
        {
            GridX = grid.X, GridY = grid.Y, GridZ = grid.Z, BlockX = block.X, BlockY = block.Y, BlockZ = block.Z,
            DynamicSharedBytes = (uint)dynamicSharedBytes, Flags = _options.Shuffle ? 0u : 1u,
            Seed = _options.Seed * 1_000_003 + _launches++,
        };
        var f = (delegate* unmanaged<LaunchConfig*, nint, int>)fn;
        int rc;
        using (var pinned = args.Pin()) rc = f(&cfg, pinned.Pointers);
        if (rc != 0) throw new EmuKernelException(LastError());
    }

    protected override void GemmCore(in GemmArgs g)
    {
        var a = g;
        Enqueue(() => RunGemm(a));
    }

    private void RunGemm(GemmArgs g)
    {
        int rc = _gemm(GemmType(g.Type), GemmType(g.OutputType), (int)g.TransA, (int)g.TransB, g.M, g.N, g.K, g.Alpha, (void*)g.A.Address, g.Lda, g.StrideA,
            (void*)g.B.Address, g.Ldb, g.StrideB, g.Beta, (void*)g.C.Address, g.Ldc, g.StrideC, g.Batch);
        if (rc != 0) throw new EmuKernelException($"cublasGemmStridedBatchedEx (emulated) failed: status {rc}: {LastError()}");
    }

    /// <summary>runtime.cpp's EmuGemmType codes.</summary>
    private static int GemmType(DType t) => t switch
    {
        DType.F32 => 0, DType.F16 => 1, DType.BF16 => 2,
        _ => throw new NotSupportedException($"gemm in {t}"),
    };

    protected override void SynchronizeCore() { }

    protected override void BeginCaptureCore() => _recording = new List<Action>();

    protected override object EndCaptureCore()
    {
        var r = _recording ?? throw new DeviceCaptureException("emu: no capture in progress");
        _recording = null;
        return r.ToArray();
    }

    protected override void ReplayCore(object graph)
    {
        foreach (var work in (Action[])graph) work();
    }

    protected override void DestroyGraphCore(object graph) { }

    protected override void DisposeCore() { }
}
