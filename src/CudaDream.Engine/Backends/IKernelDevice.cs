using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using CudaDream.Engine.Tensors;

namespace CudaDream.Engine.Backends;

/// <summary>An address in a kernel device's memory (a CUDA device pointer, or host memory under emu).</summary>
public readonly record struct DevicePtr(ulong Address)
{
    public static readonly DevicePtr Null = new(0);
    public bool IsNull => Address == 0;
    public static DevicePtr operator +(DevicePtr p, long bytes) => new(checked((ulong)((long)p.Address + bytes)));
    public override string ToString() => $"0x{Address:x}";
}

public readonly record struct Dim3(uint X, uint Y = 1, uint Z = 1)
{
    public override string ToString() => $"{X}x{Y}x{Z}";
}

/// <summary>One block of device memory owned by the caller (a plan's arena, a test tensor).</summary>
public sealed class DeviceBuffer : IDisposable
{
    private IKernelDevice? _device;
    public DevicePtr Ptr { get; }
    public long Bytes { get; }

    internal DeviceBuffer(IKernelDevice device, DevicePtr ptr, long bytes) { _device = device; Ptr = ptr; Bytes = bytes; }

    /// <summary>The address <paramref name="offset"/> bytes in, bounds-checked.</summary>
    public DevicePtr At(long offset, long length = 0)
    {
        if (offset < 0 || length < 0 || offset + length > Bytes)
            throw new ArgumentOutOfRangeException(nameof(offset), $"{offset}+{length} outside a device buffer of {Bytes} bytes");
        return Ptr + offset;
    }

    public void Dispose()
    {
        var d = Interlocked.Exchange(ref _device, null);
        d?.Free(Ptr);
    }
}

public enum GemmOp { N = 0, T = 1 }

/// <summary>
/// A GEMM with cuBLAS's exact semantics: column-major, C = Alpha·op(A)·op(B) + Beta·C, op(A) is M×K,
/// op(B) K×N, leading dimensions in elements, Batch matrices Stride elements apart. A and B are of
/// <see cref="Type"/>, C of <see cref="OutputType"/> (default: the same). fp32 runs full fp32 compute (never
/// TF32, the reference mode); bf16/fp16 inputs run on tensor cores with fp32 accumulation. With Beta = 0, C is not read.
/// </summary>
public readonly record struct GemmArgs(
    GemmOp TransA, GemmOp TransB, int M, int N, int K, float Alpha,
    DevicePtr A, int Lda, long StrideA, DevicePtr B, int Ldb, long StrideB,
    float Beta, DevicePtr C, int Ldc, long StrideC, int Batch = 1, DType Type = DType.F32, DType? CType = null)
{
    public DType OutputType => CType ?? Type;
}

/// <summary>
/// What the plan executor needs from a kernel backend (cuda and emu implement it through <see cref="KernelDevice"/>;
/// the typed launchers in <see cref="KernelLaunchers"/> are written once against it).
/// All calls are stream-ordered. Copies from and to pageable memory (spans) and <see cref="Synchronize"/> wait;
/// copies from and to a <see cref="HostBuffer"/> do not, and may be captured into a graph.
/// </summary>
public interface IKernelDevice : IDisposable
{
    /// <summary>"cuda sm_86 (NVIDIA ...)" or "emu sm_80".</summary>
    string Name { get; }
    /// <summary>Compute capability as 10·major + minor (75, 80, 86, 90 ...); the emulated tier for emu.</summary>
    int ComputeCapability { get; }

    DeviceBuffer Allocate(long bytes);
    void Free(DevicePtr ptr);
    void CopyToDevice(DevicePtr dst, ReadOnlySpan<byte> src);
    void CopyToHost(Span<byte> dst, DevicePtr src);
    void CopyDeviceToDevice(DevicePtr dst, DevicePtr src, long bytes);
    void Memset(DevicePtr dst, byte value, long bytes);

    /// <summary>Launches the kernel exported as <paramref name="kernel"/> (the CD_EXPORT alias in kernels/*.cu).</summary>
    void Launch(string kernel, Dim3 grid, Dim3 block, int dynamicSharedBytes, KernelArgs args);

    void Gemm(in GemmArgs g);
    void Synchronize();

    /// <summary>Page-locked host memory for asynchronous (and capturable) copies.</summary>
    HostBuffer AllocateHost(long bytes);
    void CopyToDeviceAsync(DevicePtr dst, HostBuffer src, long srcOffset, long bytes);
    void CopyToHostAsync(HostBuffer dst, long dstOffset, DevicePtr src, long bytes);

    /// <summary>Starts recording the stream's work instead of running it (cuStreamBeginCapture; a recording on emu).</summary>
    void BeginCapture();
    /// <summary>Ends the recording; the graph replays it (throws <see cref="DeviceCaptureException"/> when the capture failed).</summary>
    IDeviceGraph EndCapture();
    bool IsCapturing { get; }

    /// <summary>What was executed and copied, and device memory in use (see <see cref="DeviceCounts"/>).</summary>
    DeviceCounters Counters { get; }
}

/// <summary>
/// Kernel arguments in declaration order, packed like cuLaunchKernel's kernelParams: each value is
/// stored at its natural alignment and passed by address. Structs must mirror the C++ layout.
/// </summary>
public sealed class KernelArgs
{
    private byte[] _data = new byte[256];
    private int _used;
    private readonly List<int> _offsets = new();

    public int Count => _offsets.Count;

    public KernelArgs Ptr(DevicePtr p) => Value(p.Address);
    public KernelArgs I32(int v) => Value(v);
    public KernelArgs I64(long v) => Value(v);
    public KernelArgs F32(float v) => Value(v);

    public KernelArgs Value<T>(T v) where T : unmanaged
    {
        int size = Unsafe.SizeOf<T>();
        int at = (_used + 15) & ~15; // every argument 16-aligned: covers any struct's alignment
        if (at + size > _data.Length) Array.Resize(ref _data, Math.Max(_data.Length * 2, at + size));
        MemoryMarshal.Write(_data.AsSpan(at, size), in v);
        _offsets.Add(at);
        _used = at + size;
        return this;
    }

    /// <summary>A copy of the values (what a captured launch keeps).</summary>
    public KernelArgs Clone()
    {
        var c = new KernelArgs { _data = (byte[])_data.Clone(), _used = _used };
        c._offsets.AddRange(_offsets);
        return c;
    }

    /// <summary>Pins the values and an array of their addresses (void**) until disposed.</summary>
    public PinnedKernelArgs Pin()
    {
        var data = GCHandle.Alloc(_data, GCHandleType.Pinned);
        var pointers = new nint[Math.Max(1, _offsets.Count)];
        for (int i = 0; i < _offsets.Count; i++) pointers[i] = data.AddrOfPinnedObject() + _offsets[i];
        return new PinnedKernelArgs(data, GCHandle.Alloc(pointers, GCHandleType.Pinned));
    }
}

public readonly struct PinnedKernelArgs : IDisposable
{
    private readonly GCHandle _data, _pointers;
    internal PinnedKernelArgs(GCHandle data, GCHandle pointers) { _data = data; _pointers = pointers; }
    /// <summary>The void** kernelParams array.</summary>
    public nint Pointers => _pointers.AddrOfPinnedObject();
    public void Dispose() { _pointers.Free(); _data.Free(); }
}
