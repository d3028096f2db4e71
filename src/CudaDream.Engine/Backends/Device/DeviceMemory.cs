using CudaDream.Engine.Graph;

namespace CudaDream.Engine.Backends.Device;

/// <summary>
/// A plan's device memory. Normally one allocation laid out as [arena | constants | scratch]: addresses
/// are handed out while nodes are compiled (block and offset) and resolved once the buffer exists, so no
/// node ever allocates while a step runs. With <see cref="SeparateAllocations"/> every tensor, constant
/// and scratch area gets an allocation of its own instead, so compute-sanitizer's memcheck (and the
/// emulator's guard pages) catch a kernel that runs past the end of any one of them.
/// </summary>
public sealed class DeviceMemory : IDisposable
{
    private const int Arena = 0, Constants = 1, Scratch = 2;
    private readonly List<long> _sizes = [0, 0, 0];
    private readonly Dictionary<object, DeviceAddress> _owned = new();
    private readonly List<DeviceBuffer> _buffers = new();
    private DevicePtr[]? _bases;

    public bool SeparateAllocations { get; }
    public long ArenaBytes => _sizes[Arena];
    public long ConstantBytes => SeparateAllocations ? 0 : _sizes[Constants];
    public long ScratchBytes => SeparateAllocations ? 0 : _sizes[Scratch];
    /// <summary>Bytes allocated on the device (after <see cref="Allocate"/>).</summary>
    public long TotalBytes => _buffers.Sum(b => b.Bytes);
    public int Allocations => _buffers.Count;

    public DeviceMemory(long arenaBytes, bool separateAllocations = false)
    {
        SeparateAllocations = separateAllocations;
        _sizes[Arena] = separateAllocations ? 0 : arenaBytes;
    }

    private DeviceAddress NewBlock(long bytes)
    {
        _sizes.Add(Math.Max(bytes, 1));
        return new DeviceAddress(this, _sizes.Count - 1, 0);
    }

    private void RequireUnallocated()
    {
        if (_bases != null) throw new InvalidOperationException("device memory is already allocated");
    }

    /// <summary>Reserves room for a constant of <paramref name="bytes"/>.</summary>
    public DeviceAddress AddConstant(long bytes)
    {
        RequireUnallocated();
        if (SeparateAllocations) return NewBlock(bytes);
        long at = MemoryPlanner.Align(_sizes[Constants], MemoryPlanner.DefaultAlignment);
        _sizes[Constants] = at + Math.Max(bytes, 1);
        return new DeviceAddress(this, Constants, at);
    }

    /// <summary>
    /// Where a runtime value lives: its planned arena offset, or (separate allocations) a buffer of its
    /// own shared by everything that aliases <paramref name="root"/> (views of the same bytes).
    /// </summary>
    public DeviceAddress ArenaValue(long offset, long rootBytes, object root)
    {
        if (!SeparateAllocations) return new DeviceAddress(this, Arena, offset);
        if (_owned.TryGetValue(root, out var a)) return a;
        RequireUnallocated();
        return _owned[root] = NewBlock(rootBytes);
    }

    /// <summary>Workspace at <paramref name="offset"/> of the scratch area the current node uses (shared across nodes).</summary>
    public DeviceAddress ScratchArea(long offset, long bytes)
    {
        RequireUnallocated();
        if (SeparateAllocations) return NewBlock(bytes);
        _sizes[Scratch] = Math.Max(_sizes[Scratch], offset + Math.Max(bytes, 1));
        return new DeviceAddress(this, Scratch, offset);
    }

    /// <summary>Allocates; every address handed out before is valid from now on.</summary>
    public void Allocate(IKernelDevice device)
    {
        RequireUnallocated();
        var bases = new DevicePtr[_sizes.Count];
        if (SeparateAllocations)
        {
            for (int b = 3; b < _sizes.Count; b++)
            {
                _buffers.Add(device.Allocate(_sizes[b]));
                bases[b] = _buffers[^1].Ptr;
            }
        }
        else
        {
            long constants = MemoryPlanner.Align(_sizes[Arena], MemoryPlanner.DefaultAlignment);
            long scratch = MemoryPlanner.Align(constants + _sizes[Constants], MemoryPlanner.DefaultAlignment);
            _buffers.Add(device.Allocate(Math.Max(1, scratch + _sizes[Scratch])));
            bases[Arena] = _buffers[0].Ptr;
            bases[Constants] = _buffers[0].Ptr + constants;
            bases[Scratch] = _buffers[0].Ptr + scratch;
        }
        _bases = bases;
    }

    internal DevicePtr Base(int block) => _bases?[block] ?? throw new InvalidOperationException("device memory is not allocated yet");

    public void Dispose()
    {
        foreach (var b in _buffers) b.Dispose();
        _buffers.Clear();
    }
}

/// <summary>A place in a plan's <see cref="DeviceMemory"/>; <see cref="Ptr"/> is valid once the memory is allocated.</summary>
public readonly record struct DeviceAddress(DeviceMemory? Memory, int Block, long Offset)
{
    public static readonly DeviceAddress Null = new(null, 0, 0);
    public bool IsNull => Memory == null;
    public DevicePtr Ptr => Memory == null ? DevicePtr.Null : Memory.Base(Block) + Offset;
    public DeviceAddress At(long bytes) => Memory == null ? Null : this with { Offset = Offset + bytes };
}
