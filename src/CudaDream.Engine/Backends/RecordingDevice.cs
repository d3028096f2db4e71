namespace CudaDream.Engine.Backends;

/// <summary>A launch a <see cref="RecordingDevice"/> saw: a kernel by its exported name, or a GEMM with its types.</summary>
public sealed record RecordedLaunch(string Kernel, Dim3 Grid, Dim3 Block, int DynamicSharedBytes, GemmArgs? Gemm = null)
{
    public bool IsGemm => Gemm != null;
}

/// <summary>
/// A device that executes nothing and remembers every launch and GEMM in order: plans of any size (a bf16 SD 1.5 training
/// step at 512 px) compile and "run" on it in milliseconds without memory, so tests can check what a step would issue —
/// which GEMMs take the tensor-core path, how many kernels a step launches — on a machine without a GPU.
/// Addresses are fake and never dereferenced; host copies and syncs do nothing.
/// </summary>
public sealed class RecordingDevice(int computeCapability = 90) : KernelDevice
{
    private ulong _next = 1UL << 40;
    private List<RecordedLaunch>? _capture;

    public override string Name => $"recording sm_{computeCapability}";
    public override int ComputeCapability => computeCapability;
    public List<RecordedLaunch> Launches { get; } = new();

    private void Record(RecordedLaunch l) => (_capture ?? Launches).Add(l);

    protected override DevicePtr AllocateCore(long bytes)
    {
        var p = new DevicePtr(_next);
        _next += (ulong)((Math.Max(bytes, 1) + 255) / 256 * 256);
        return p;
    }

    protected override void FreeCore(DevicePtr ptr) { }
    protected override nint AllocateHostCore(long bytes) => System.Runtime.InteropServices.Marshal.AllocHGlobal((nint)bytes);
    protected override void FreeHostCore(nint pointer) => System.Runtime.InteropServices.Marshal.FreeHGlobal(pointer);
    protected override void CopyToDeviceCore(DevicePtr dst, ReadOnlySpan<byte> src) { }
    protected override void CopyToHostCore(Span<byte> dst, DevicePtr src) => dst.Clear();
    protected override void CopyToDeviceAsyncCore(DevicePtr dst, nint src, long bytes) { }
    protected override void CopyToHostAsyncCore(nint dst, DevicePtr src, long bytes) { }
    protected override void CopyDeviceToDeviceCore(DevicePtr dst, DevicePtr src, long bytes) { }
    protected override void MemsetCore(DevicePtr dst, byte value, long bytes) { }
    protected override void LaunchCore(string kernel, Dim3 grid, Dim3 block, int dynamicSharedBytes, KernelArgs args) => Record(new(kernel, grid, block, dynamicSharedBytes));
    protected override void GemmCore(in GemmArgs g) => Record(new("gemm", new Dim3(1), new Dim3(1), 0, g));
    protected override void SynchronizeCore() { }
    protected override void BeginCaptureCore() => _capture = new List<RecordedLaunch>();

    protected override object EndCaptureCore()
    {
        var c = _capture!;
        _capture = null;
        return c;
    }

    protected override void ReplayCore(object graph) => Launches.AddRange((List<RecordedLaunch>)graph);
    protected override void DestroyGraphCore(object graph) { }
    protected override void DisposeCore() { }
}
