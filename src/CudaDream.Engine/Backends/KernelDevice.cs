using System.Runtime.InteropServices;

namespace CudaDream.Engine.Backends;

/// <summary>Thrown when something a stream capture cannot hold is asked for while capturing (a sync, an allocation, a pageable copy).</summary>
public sealed class DeviceCaptureException(string message) : CudaDreamException(message);

/// <summary>
/// Page-locked host memory of a device. Copies between it and the device are asynchronous (stream-ordered,
/// the host does not wait), and a copy captured into a graph reads or writes the buffer when the graph is
/// replayed — so per-update inputs are staged here and the captured update picks them up.
/// </summary>
public sealed unsafe class HostBuffer : IDisposable
{
    private KernelDevice? _device;
    public nint Pointer { get; }
    public long Bytes { get; }

    internal HostBuffer(KernelDevice device, nint pointer, long bytes) { _device = device; Pointer = pointer; Bytes = bytes; }

    public Span<byte> Span(long offset, long length)
    {
        Check(offset, length);
        return new Span<byte>((byte*)Pointer + offset, checked((int)length));
    }

    public Span<T> Span<T>(long offset, int count) where T : unmanaged => MemoryMarshal.Cast<byte, T>(Span(offset, (long)count * sizeof(T)));

    internal void Check(long offset, long length)
    {
        if (offset < 0 || length < 0 || offset + length > Bytes)
            throw new ArgumentOutOfRangeException(nameof(offset), $"{offset}+{length} outside a host buffer of {Bytes} bytes");
    }

    public void Dispose()
    {
        var d = Interlocked.Exchange(ref _device, null);
        d?.FreeHost(Pointer);
    }
}

/// <summary>A captured sequence of device work (a CUDA graph; a recording on emu) that replays with one call.</summary>
public interface IDeviceGraph : IDisposable
{
    /// <summary>Enqueues the whole sequence again (stream-ordered; the host does not wait).</summary>
    void Replay();
    /// <summary>What one replay executes (kernels, GEMMs, copies).</summary>
    DeviceCounts PerReplay { get; }
}

/// <summary>
/// The one place every kernel device's calls pass: it counts them (<see cref="Counters"/>) and enforces the
/// rules of stream capture on every backend alike — no synchronisation, allocation or pageable copy while
/// capturing — so the emulator rejects what a GPU's capture would. Devices implement the *Core methods.
/// </summary>
public abstract class KernelDevice : IKernelDevice
{
    private bool _capturing;
    private DeviceCounts _captured;

    public abstract string Name { get; }
    public abstract int ComputeCapability { get; }
    public DeviceCounters Counters { get; } = new();
    public bool IsCapturing => _capturing;

    protected abstract DevicePtr AllocateCore(long bytes);
    protected abstract void FreeCore(DevicePtr ptr);
    protected abstract nint AllocateHostCore(long bytes);
    protected abstract void FreeHostCore(nint pointer);
    protected abstract void CopyToDeviceCore(DevicePtr dst, ReadOnlySpan<byte> src);
    protected abstract void CopyToHostCore(Span<byte> dst, DevicePtr src);
    protected abstract void CopyToDeviceAsyncCore(DevicePtr dst, nint src, long bytes);
    protected abstract void CopyToHostAsyncCore(nint dst, DevicePtr src, long bytes);
    protected abstract void CopyDeviceToDeviceCore(DevicePtr dst, DevicePtr src, long bytes);
    protected abstract void MemsetCore(DevicePtr dst, byte value, long bytes);
    protected abstract void LaunchCore(string kernel, Dim3 grid, Dim3 block, int dynamicSharedBytes, KernelArgs args);
    protected abstract void GemmCore(in GemmArgs g);
    protected abstract void SynchronizeCore();
    protected abstract void BeginCaptureCore();
    /// <summary>Ends the capture and returns the backend's replayable form (throws when the capture was invalidated).</summary>
    protected abstract object EndCaptureCore();
    protected abstract void ReplayCore(object graph);
    protected abstract void DestroyGraphCore(object graph);
    protected abstract void DisposeCore();

    private void Count(in DeviceCounts c)
    {
        if (_capturing) _captured += c;
        else Counters.Add(c);
    }

    private void RefuseWhileCapturing(string what)
    {
        if (_capturing) throw new DeviceCaptureException($"{Name}: {what} is not allowed while a graph is being captured");
    }

    public DeviceBuffer Allocate(long bytes)
    {
        RefuseWhileCapturing("allocating device memory");
        var p = AllocateCore(bytes);
        Counters.Allocated(p, Math.Max(1, bytes));
        return new DeviceBuffer(this, p, bytes);
    }

    public void Free(DevicePtr ptr)
    {
        RefuseWhileCapturing("freeing device memory");
        FreeCore(ptr);
        Counters.Freed(ptr);
    }

    public HostBuffer AllocateHost(long bytes)
    {
        RefuseWhileCapturing("allocating pinned host memory");
        return new HostBuffer(this, AllocateHostCore(Math.Max(1, bytes)), bytes);
    }

    internal void FreeHost(nint pointer) => FreeHostCore(pointer);

    /// <summary>A copy from pageable memory: the device must finish it before the span may go, so it waits (one sync).</summary>
    public void CopyToDevice(DevicePtr dst, ReadOnlySpan<byte> src)
    {
        RefuseWhileCapturing("a copy from pageable host memory (stage it in a HostBuffer)");
        CopyToDeviceCore(dst, src);
        Count(default(DeviceCounts) with { HostToDeviceBytes = src.Length, HostToDeviceCopies = 1, Synchronizations = 1 });
    }

    public void CopyToHost(Span<byte> dst, DevicePtr src)
    {
        RefuseWhileCapturing("a copy to pageable host memory");
        CopyToHostCore(dst, src);
        Count(default(DeviceCounts) with { DeviceToHostBytes = dst.Length, DeviceToHostCopies = 1, Synchronizations = 1 });
    }

    public void CopyToDeviceAsync(DevicePtr dst, HostBuffer src, long srcOffset, long bytes)
    {
        src.Check(srcOffset, bytes);
        if (bytes == 0) return;
        CopyToDeviceAsyncCore(dst, src.Pointer + (nint)srcOffset, bytes);
        Count(default(DeviceCounts) with { HostToDeviceBytes = bytes, HostToDeviceCopies = 1 });
    }

    public void CopyToHostAsync(HostBuffer dst, long dstOffset, DevicePtr src, long bytes)
    {
        dst.Check(dstOffset, bytes);
        if (bytes == 0) return;
        CopyToHostAsyncCore(dst.Pointer + (nint)dstOffset, src, bytes);
        Count(default(DeviceCounts) with { DeviceToHostBytes = bytes, DeviceToHostCopies = 1 });
    }

    public void CopyDeviceToDevice(DevicePtr dst, DevicePtr src, long bytes)
    {
        if (bytes == 0) return;
        CopyDeviceToDeviceCore(dst, src, bytes);
        Count(default(DeviceCounts) with { DeviceCopies = 1 });
    }

    public void Memset(DevicePtr dst, byte value, long bytes)
    {
        if (bytes == 0) return;
        MemsetCore(dst, value, bytes);
        Count(default(DeviceCounts) with { DeviceCopies = 1 });
    }

    public void Launch(string kernel, Dim3 grid, Dim3 block, int dynamicSharedBytes, KernelArgs args)
    {
        LaunchCore(kernel, grid, block, dynamicSharedBytes, args);
        Count(default(DeviceCounts) with { Launches = 1 });
    }

    public void Gemm(in GemmArgs g)
    {
        GemmCore(g);
        Count(default(DeviceCounts) with { Gemms = 1 });
    }

    public void Synchronize()
    {
        RefuseWhileCapturing("synchronizing");
        SynchronizeCore();
        Count(default(DeviceCounts) with { Synchronizations = 1 });
    }

    public void BeginCapture()
    {
        if (_capturing) throw new DeviceCaptureException($"{Name}: a capture is already in progress");
        BeginCaptureCore();
        _capturing = true;
        _captured = default;
    }

    public IDeviceGraph EndCapture()
    {
        if (!_capturing) throw new DeviceCaptureException($"{Name}: no capture in progress");
        _capturing = false;
        return new Graph(this, EndCaptureCore(), _captured);
    }

    private sealed class Graph(KernelDevice device, object core, DeviceCounts perReplay) : IDeviceGraph
    {
        private object? _core = core;
        public DeviceCounts PerReplay => perReplay;

        public void Replay()
        {
            var c = _core ?? throw new ObjectDisposedException(nameof(IDeviceGraph));
            device.RefuseWhileCapturing("replaying a graph");
            device.ReplayCore(c);
            device.Counters.Add(perReplay with { GraphReplays = perReplay.GraphReplays + 1 });
        }

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _core, null) is { } c) device.DestroyGraphCore(c);
        }
    }

    public void Dispose()
    {
        if (_capturing)
        {
            _capturing = false;
            try { DestroyGraphCore(EndCaptureCore()); } catch (CudaDreamException) { }
        }
        DisposeCore();
        GC.SuppressFinalize(this);
    }
}
