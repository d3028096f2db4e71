using CudaDream.Engine.Graph;

namespace CudaDream.Engine.Backends.Device;

/// <summary>The parts of a plan's single device allocation.</summary>
public enum DeviceRegion
{
    /// <summary>The plan's arena: runtime values at their planned offsets.</summary>
    Arena,
    /// <summary>Constants read by kernels (weights, folded constants, splats), the random key and the index-error flags.</summary>
    Constants,
    /// <summary>Workspace one node uses while it runs (im2col columns, statistics nobody keeps); shared by all nodes.</summary>
    Scratch,
}

/// <summary>
/// One device allocation per plan, laid out as [arena | constants | scratch]. Addresses are handed out
/// while nodes are compiled (region and offset) and resolved once the buffer exists, so no node ever
/// allocates while a step runs.
/// </summary>
public sealed class DeviceMemory : IDisposable
{
    private readonly long[] _size = new long[3];
    private DeviceBuffer? _buffer;
    private DevicePtr _arena, _constants, _scratch;

    public long ArenaBytes => _size[(int)DeviceRegion.Arena];
    public long ConstantBytes => _size[(int)DeviceRegion.Constants];
    public long ScratchBytes => _size[(int)DeviceRegion.Scratch];
    public long TotalBytes => _buffer?.Bytes ?? Layout().Total;

    public DeviceMemory(long arenaBytes) => _size[(int)DeviceRegion.Arena] = arenaBytes;

    /// <summary>Reserves <paramref name="bytes"/> at the end of the constants region.</summary>
    public DeviceAddress AddConstant(long bytes)
    {
        if (_buffer != null) throw new InvalidOperationException("device memory is already allocated");
        long at = MemoryPlanner.Align(_size[(int)DeviceRegion.Constants], MemoryPlanner.DefaultAlignment);
        _size[(int)DeviceRegion.Constants] = at + Math.Max(bytes, 1);
        return new DeviceAddress(this, DeviceRegion.Constants, at);
    }

    /// <summary>Makes the scratch region at least <paramref name="bytes"/> long.</summary>
    public void NeedScratch(long bytes)
    {
        if (_buffer != null) throw new InvalidOperationException("device memory is already allocated");
        _size[(int)DeviceRegion.Scratch] = Math.Max(_size[(int)DeviceRegion.Scratch], bytes);
    }

    private (long Constants, long Scratch, long Total) Layout()
    {
        long constants = MemoryPlanner.Align(ArenaBytes, MemoryPlanner.DefaultAlignment);
        long scratch = MemoryPlanner.Align(constants + ConstantBytes, MemoryPlanner.DefaultAlignment);
        return (constants, scratch, Math.Max(1, scratch + ScratchBytes));
    }

    /// <summary>The one allocation; every address handed out before is valid from now on.</summary>
    public void Allocate(IKernelDevice device)
    {
        if (_buffer != null) throw new InvalidOperationException("device memory is already allocated");
        var (constants, scratch, total) = Layout();
        _buffer = device.Allocate(total);
        _arena = _buffer.Ptr;
        _constants = _buffer.Ptr + constants;
        _scratch = _buffer.Ptr + scratch;
    }

    internal DevicePtr Base(DeviceRegion region) => _buffer == null
        ? throw new InvalidOperationException("device memory is not allocated yet")
        : region switch { DeviceRegion.Arena => _arena, DeviceRegion.Constants => _constants, _ => _scratch };

    public void Dispose() => _buffer?.Dispose();
}

/// <summary>A place in a plan's <see cref="DeviceMemory"/>; <see cref="Ptr"/> is valid once the memory is allocated.</summary>
public readonly record struct DeviceAddress(DeviceMemory? Memory, DeviceRegion Region, long Offset)
{
    public static readonly DeviceAddress Null = new(null, DeviceRegion.Arena, 0);
    public bool IsNull => Memory == null;
    public DevicePtr Ptr => Memory == null ? DevicePtr.Null : Memory.Base(Region) + Offset;
    public DeviceAddress At(long bytes) => Memory == null ? Null : this with { Offset = Offset + bytes };
}
