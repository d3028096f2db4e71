namespace CudaDream.Engine.Backends;

/// <summary>
/// What a kernel device was asked to do, counted where every call passes (<see cref="KernelDevice"/>): kernels
/// and GEMMs executed (those inside a replayed graph included), bytes copied each way, host synchronisations
/// (a sync, or a copy that must wait), graph replays, and device memory in use and at its peak.
/// </summary>
public readonly record struct DeviceCounts(
    long Launches, long Gemms, long HostToDeviceBytes, long HostToDeviceCopies, long DeviceToHostBytes, long DeviceToHostCopies,
    long DeviceCopies, long Synchronizations, long GraphReplays)
{
    public static DeviceCounts operator +(DeviceCounts a, DeviceCounts b) => new(
        a.Launches + b.Launches, a.Gemms + b.Gemms, a.HostToDeviceBytes + b.HostToDeviceBytes, a.HostToDeviceCopies + b.HostToDeviceCopies,
        a.DeviceToHostBytes + b.DeviceToHostBytes, a.DeviceToHostCopies + b.DeviceToHostCopies, a.DeviceCopies + b.DeviceCopies,
        a.Synchronizations + b.Synchronizations, a.GraphReplays + b.GraphReplays);

    public static DeviceCounts operator -(DeviceCounts a, DeviceCounts b) => new(
        a.Launches - b.Launches, a.Gemms - b.Gemms, a.HostToDeviceBytes - b.HostToDeviceBytes, a.HostToDeviceCopies - b.HostToDeviceCopies,
        a.DeviceToHostBytes - b.DeviceToHostBytes, a.DeviceToHostCopies - b.DeviceToHostCopies, a.DeviceCopies - b.DeviceCopies,
        a.Synchronizations - b.Synchronizations, a.GraphReplays - b.GraphReplays);

    /// <summary>Per one of <paramref name="n"/> repetitions (rounded down; what a per-update report shows).</summary>
    public DeviceCounts Per(long n) => n <= 0 ? this : new(Launches / n, Gemms / n, HostToDeviceBytes / n, HostToDeviceCopies / n,
        DeviceToHostBytes / n, DeviceToHostCopies / n, DeviceCopies / n, Synchronizations / n, GraphReplays / n);
}

/// <summary>The running totals of one device (see <see cref="DeviceCounts"/>).</summary>
public sealed class DeviceCounters
{
    private DeviceCounts _counts;
    private readonly Dictionary<ulong, long> _allocations = new();

    public DeviceCounts Counts => _counts;
    /// <summary>Bytes of device memory allocated now.</summary>
    public long AllocatedBytes { get; private set; }
    /// <summary>Allocations alive now.</summary>
    public int LiveAllocations => _allocations.Count;
    /// <summary>The most bytes allocated at once since the device opened (or <see cref="ResetPeak"/>).</summary>
    public long PeakAllocatedBytes { get; private set; }

    public void ResetPeak() => PeakAllocatedBytes = AllocatedBytes;

    internal void Add(in DeviceCounts c) => _counts += c;

    internal void Allocated(DevicePtr p, long bytes)
    {
        _allocations[p.Address] = bytes;
        AllocatedBytes += bytes;
        PeakAllocatedBytes = Math.Max(PeakAllocatedBytes, AllocatedBytes);
    }

    internal void Freed(DevicePtr p)
    {
        if (_allocations.Remove(p.Address, out var bytes)) AllocatedBytes -= bytes;
    }
}
