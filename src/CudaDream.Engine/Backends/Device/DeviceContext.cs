using CudaDream.Engine.Graph;
using CudaDream.Engine.Tensors;

namespace CudaDream.Engine.Backends.Device;

/// <summary>
/// One kernel device shared by every executor of a run (training steps, evaluation, text encoder, sample grids), with
/// each constant resident once: a host tensor is uploaded the first time any executor needs it, and every later
/// executor that reads the same tensor — or frozen weights with the same bytes, as two loads of one model file give —
/// reads that copy. Tensors marked <see cref="MarkMutable">mutable</see> (trained parameters) are shared by
/// reference only, never by content, so an update can never leak into a frozen weight that happens to be equal.
/// </summary>
public sealed class DeviceContext : IDisposable
{
    /// <summary>Constants smaller than this are not matched by content (cheap to hold twice, not worth hashing).</summary>
    private const int ContentSharingMinBytes = 1024;

    private sealed class Resident(DeviceAddress address, long bytes, Tensor? host)
    {
        public DeviceAddress Address { get; } = address;
        public long Bytes { get; } = bytes;
        public Tensor? Host { get; } = host;
        public int Users { get; set; } = 1;
        public bool SharedByContent { get; set; }
    }

    private readonly bool _ownsDevice;
    private readonly Dictionary<Tensor, Resident> _byTensor = new(ReferenceEqualityComparer.Instance);
    private readonly Dictionary<(DType, string, double), Resident> _splats = new();
    private readonly Dictionary<(DType, long, ulong), List<Resident>> _byContent = new();
    private readonly HashSet<Tensor> _mutable = new(ReferenceEqualityComparer.Instance);
    private readonly List<DeviceMemory> _slabs = new();
    private DeviceMemory? _pending;
    private readonly List<(Resident Resident, Value Value)> _pendingUploads = new();

    public IKernelDevice Device { get; }
    /// <summary>One allocation per constant (memcheck, guard pages) instead of one slab per executor.</summary>
    public bool SeparateAllocations { get; }

    /// <summary>Bytes of constants resident on the device.</summary>
    public long ResidentBytes { get; private set; }
    /// <summary>Constants executors asked for that were found resident (by reference or by content) instead of uploaded.</summary>
    public int SharedConstants { get; private set; }
    /// <summary>Host-to-device re-uploads of changed parameters (<see cref="Refresh"/>); a device-resident update needs none.</summary>
    public long ParameterUploads { get; private set; }

    public DeviceContext(IKernelDevice device, bool ownsDevice = false, bool separateAllocations = false)
    {
        Device = device;
        _ownsDevice = ownsDevice;
        SeparateAllocations = separateAllocations;
    }

    /// <summary>Trained tensors: shared between executors by reference only, and the only ones <see cref="Refresh"/> may rewrite.</summary>
    public void MarkMutable(Tensor host) => _mutable.Add(host);

    public bool IsMutable(Tensor host) => _mutable.Contains(host);

    /// <summary>The device copy of <paramref name="host"/> when some executor made it resident, else null.</summary>
    public DevicePtr? Find(Tensor host) => _byTensor.TryGetValue(host, out var r) && _pending != r.Address.Memory ? r.Address.Ptr : null;

    /// <summary>Makes <paramref name="host"/> resident now (if no executor did) and returns its device address.</summary>
    public DevicePtr MakeResident(Tensor host)
    {
        if (Find(host) is { } p) return p;
        if (_pending != null) throw new InvalidOperationException("an executor is being built in this context");
        var address = Place(new Value("resident", host.DType, (int[])host.Shape.Clone()) { Constant = host });
        Commit();
        return address.Ptr;
    }

    /// <summary>
    /// Where constant <paramref name="v"/> lives on the device. A new one is reserved in the pending slab and uploaded
    /// by <see cref="Commit"/>, which the executor calls once its nodes are compiled.
    /// </summary>
    internal DeviceAddress Place(Value v)
    {
        if (v.Constant is { } t)
        {
            if (_byTensor.TryGetValue(t, out var same)) return Share(same);
            bool byContent = !_mutable.Contains(t) && t.ByteLength >= ContentSharingMinBytes;
            var key = byContent ? (t.DType, t.ByteLength, ContentHash(t)) : default;
            if (byContent && _byContent.TryGetValue(key, out var candidates))
                foreach (var c in candidates)
                    if (c.Host!.Data.Span.SequenceEqual(t.Data.Span))
                    {
                        c.SharedByContent = true;
                        _byTensor[t] = c;
                        return Share(c);
                    }
            var r = Reserve(v, t);
            _byTensor[t] = r;
            if (byContent)
            {
                if (!_byContent.TryGetValue(key, out var list)) _byContent[key] = list = new List<Resident>();
                list.Add(r);
            }
            return r.Address;
        }
        if (v.Splat is double s)
        {
            var key = (v.DType, Shapes.Format(v.Shape!), s);
            if (_splats.TryGetValue(key, out var same)) return Share(same);
            return (_splats[key] = Reserve(v, null)).Address;
        }
        throw new CudaDreamException($"weight '{v.Name}' has no data (its external weights file was not loaded)");
    }

    private DeviceAddress Share(Resident r)
    {
        r.Users++;
        SharedConstants++;
        return r.Address;
    }

    private Resident Reserve(Value v, Tensor? host)
    {
        long bytes = ExecutionPlan.ByteSize(v);
        if (host != null && host.ByteLength != bytes)
            throw new CudaDreamException($"constant '{v.Name}' holds {host.ByteLength} bytes, its value needs {bytes}");
        _pending ??= new DeviceMemory(0, SeparateAllocations);
        var r = new Resident(_pending.AddConstant(bytes), bytes, host);
        _pendingUploads.Add((r, v));
        return r;
    }

    /// <summary>Allocates the pending slab and uploads its constants (a splat is filled on the device).</summary>
    internal void Commit()
    {
        if (_pending == null) return;
        var slab = _pending;
        slab.Allocate(Device);
        _slabs.Add(slab);
        _pending = null;
        foreach (var (r, v) in _pendingUploads)
        {
            Upload(r, v);
            ResidentBytes += r.Bytes;
        }
        _pendingUploads.Clear();
    }

    /// <summary>Forgets the constants reserved since the last <see cref="Commit"/> (an executor failed to build).</summary>
    internal void Rollback()
    {
        if (_pending == null) return;
        foreach (var (r, v) in _pendingUploads)
        {
            if (v.Constant != null) _byTensor.Remove(v.Constant);
            foreach (var list in _byContent.Values) list.Remove(r);
            foreach (var k in _splats.Where(kv => kv.Value == r).Select(kv => kv.Key).ToList()) _splats.Remove(k);
        }
        foreach (var k in _byTensor.Where(kv => kv.Value.Address.Memory == _pending).Select(kv => kv.Key).ToList()) _byTensor.Remove(k);
        _pendingUploads.Clear();
        _pending.Dispose();
        _pending = null;
    }

    private void Upload(Resident r, Value v)
    {
        if (r.Host != null) Device.CopyToDevice(r.Address.Ptr, r.Host.Data.Span);
        else
        {
            // A splat is filled on the device: uploading it could mean a gigabyte of equal elements.
            var one = Tensor.FromArray(new[] { v.Splat!.Value }, 1).To(v.DType);
            KernelLaunchers.FillPattern(Device, r.Address.Ptr, v.Numel, one.Data.Span);
        }
    }

    /// <summary>
    /// Uploads the host data of a mutable constant again (a parameter a host-side optimizer changed): once for every
    /// executor that reads it. Unknown tensors are ignored (no executor reads them).
    /// </summary>
    public void Refresh(Tensor host)
    {
        if (!_byTensor.TryGetValue(host, out var r) || r.Address.Memory == _pending) return;
        if (!_mutable.Contains(host))
            throw new CudaDreamException("a constant that is not marked mutable was changed on the host after upload (mark trained tensors with DeviceContext.MarkMutable)");
        Device.CopyToDevice(r.Address.Ptr, host.Data.Span);
        ParameterUploads++;
    }

    /// <summary>A cheap content key: the length and 64-bit FNV-1a over at most 4096 evenly spaced 8-byte words (equal keys are compared in full).</summary>
    private static ulong ContentHash(Tensor t)
    {
        var span = t.Data.Span;
        int words = span.Length / 8;
        int samples = Math.Min(words, 4096);
        ulong h = 14695981039346656037UL ^ (ulong)span.Length;
        for (int i = 0; i < samples; i++)
        {
            long at = (long)i * words / samples * 8;
            h = (h ^ BitConverter.ToUInt64(span.Slice((int)at, 8))) * 1099511628211UL;
        }
        for (int i = words * 8; i < span.Length; i++) h = (h ^ span[i]) * 1099511628211UL;
        return h;
    }

    public void Dispose()
    {
        _pending?.Dispose();
        foreach (var s in _slabs) s.Dispose();
        _slabs.Clear();
        if (_ownsDevice) Device.Dispose();
    }
}
