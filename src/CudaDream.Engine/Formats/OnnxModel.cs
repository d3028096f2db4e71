using System.IO.MemoryMappedFiles;
using System.Runtime.InteropServices;
using CudaDream.Engine.Tensors;
using Google.Protobuf;
using Onnx;

namespace CudaDream.Engine.Formats;

/// <summary>
/// An ONNX model file parsed with OnnxSharp's protobuf classes. Initializers become <see cref="Tensor"/>s
/// without copies: inline <c>raw_data</c> is viewed in place, external data (<c>weights.pb</c>,
/// <c>*.onnx_data</c>) is viewed through one read-only memory map per file. Every size and offset is
/// checked; an external location that leaves the model's folder is refused.
/// </summary>
public sealed partial class OnnxModel : IDisposable
{
    /// <summary>Protobuf's own limit; larger models must use external data.</summary>
    public const long MaxModelBytes = int.MaxValue;
    public const int MaxRank = 16;

    private readonly Dictionary<string, MappedFile> _mapped = new(StringComparer.Ordinal);

    public string Path { get; }
    public string Directory { get; }
    public ModelProto Proto { get; }
    /// <summary>Version of the default ("ai.onnx") operator set.</summary>
    public int Opset { get; }
    /// <summary>Initializers by name. When external data was not loaded, entries are absent from this map but listed in <see cref="InitializerInfo"/>.</summary>
    public IReadOnlyDictionary<string, Tensor> Initializers => _initializers;
    /// <summary>Every initializer's dtype and shape (also those whose external data was not loaded).</summary>
    public IReadOnlyDictionary<string, (DType DType, int[] Shape)> InitializerInfo => _info;
    /// <summary>True when some initializer's data lives in an external file that was not loaded.</summary>
    public bool HasMissingWeights { get; }

    private readonly Dictionary<string, Tensor> _initializers = new(StringComparer.Ordinal);
    private readonly Dictionary<string, (DType, int[])> _info = new(StringComparer.Ordinal);

    private OnnxModel(string path, ModelProto proto, bool loadExternalData)
    {
        Path = path;
        Directory = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path))!;
        Proto = proto;
        if (proto.Graph == null) throw new InvalidFileException(path, "the model has no graph");
        Opset = proto.OpsetImport.Where(o => o.Domain is "" or "ai.onnx").Select(o => (int)o.Version).DefaultIfEmpty(0).Max();
        if (Opset == 0) throw new InvalidFileException(path, "the model declares no ai.onnx opset");

        foreach (var init in proto.Graph.Initializer)
        {
            var (dtype, shape) = TensorInfo(path, init);
            if (_info.ContainsKey(init.Name)) throw new InvalidFileException(path, $"initializer '{init.Name}' is defined twice");
            _info[init.Name] = (dtype, shape);
            if (init.DataLocation == TensorProto.Types.DataLocation.External)
            {
                if (!loadExternalData) { HasMissingWeights = true; continue; }
                _initializers[init.Name] = ReadExternal(init, dtype, shape);
            }
            else _initializers[init.Name] = ReadInline(path, init, dtype, shape);
        }
    }

    /// <summary>Loads an .onnx file. With <paramref name="loadExternalData"/> false, external weights are not opened (shapes suffice for inspect).</summary>
    public static OnnxModel Load(string path, bool loadExternalData = true)
    {
        if (!File.Exists(path)) throw new InvalidFileException(path, "file not found");
        var len = new FileInfo(path).Length;
        if (len > MaxModelBytes) throw new InvalidFileException(path, $"{len} bytes is above protobuf's 2 GiB limit (large models keep weights in external data)");
        ModelProto proto;
        try
        {
            using var fs = File.OpenRead(path);
            using var cis = new CodedInputStream(fs);
            proto = ModelProto.Parser.ParseFrom(cis);
        }
        catch (InvalidProtocolBufferException e) { throw new InvalidFileException(path, $"not a valid ONNX protobuf ({e.Message})"); }
        var model = new OnnxModel(path, proto, loadExternalData);
        return model;
    }

    /// <summary>Loads the model and, when its external data is missing, keeps the shapes (for <c>inspect</c>).</summary>
    public static OnnxModel LoadForInspection(string path)
    {
        try { return Load(path, loadExternalData: true); }
        catch (ExternalDataMissingException) { return Load(path, loadExternalData: false); }
    }

    internal static (DType, int[]) TensorInfo(string path, TensorProto t)
    {
        if (!DTypes.TryFromOnnx(t.DataType, out var dtype))
            throw new InvalidFileException(path, $"initializer '{t.Name}' has unsupported data type {t.DataType}");
        if (t.Dims.Count > MaxRank) throw new InvalidFileException(path, $"initializer '{t.Name}' has rank {t.Dims.Count} > {MaxRank}");
        var shape = new int[t.Dims.Count];
        long numel = 1;
        for (int i = 0; i < shape.Length; i++)
        {
            long d = t.Dims[i];
            if (d < 0 || d > int.MaxValue) throw new InvalidFileException(path, $"initializer '{t.Name}' has invalid dimension {d}");
            shape[i] = (int)d;
            if (d != 0 && numel > long.MaxValue / 16 / d) throw new InvalidFileException(path, $"initializer '{t.Name}' is too large");
            numel *= d;
        }
        return (dtype, shape);
    }

    /// <summary>Converts an inline TensorProto (raw_data or typed fields) to a tensor; raw_data is viewed, not copied.</summary>
    internal static Tensor ReadInline(string path, TensorProto t, DType dtype, int[] shape)
    {
        long numel = Shapes.Numel(shape);
        long bytes = numel * dtype.Size();
        if (!t.RawData.IsEmpty)
        {
            if (t.RawData.Length != bytes)
                throw new InvalidFileException(path, $"initializer '{t.Name}': {dtype}{Shapes.Format(shape)} needs {bytes} bytes, raw_data has {t.RawData.Length}");
            return new Tensor(dtype, shape, MemoryMarshal.AsMemory(t.RawData.Memory));
        }
        int count = dtype switch
        {
            DType.F32 => t.FloatData.Count,
            DType.F64 => t.DoubleData.Count,
            DType.I64 => t.Int64Data.Count,
            DType.I32 or DType.I16 or DType.I8 or DType.U8 or DType.Bool or DType.F16 or DType.BF16 => t.Int32Data.Count,
            _ => -1,
        };
        if (count != numel)
            throw new InvalidFileException(path, $"initializer '{t.Name}': {dtype}{Shapes.Format(shape)} has {count} values in its typed field, expected {numel}");
        // Allocated only once the values are known to be there: a header claiming a huge shape costs nothing.
        var result = Tensor.Zeros(dtype, shape);
        switch (dtype)
        {
            case DType.F32: for (int i = 0; i < count; i++) result.Span<float>()[i] = t.FloatData[i]; break;
            case DType.F64: for (int i = 0; i < count; i++) result.Span<double>()[i] = t.DoubleData[i]; break;
            case DType.I64: for (int i = 0; i < count; i++) result.Span<long>()[i] = t.Int64Data[i]; break;
            case DType.I32: for (int i = 0; i < count; i++) result.Span<int>()[i] = t.Int32Data[i]; break;
            case DType.I16: for (int i = 0; i < count; i++) result.Span<short>()[i] = (short)t.Int32Data[i]; break;
            case DType.F16 or DType.BF16: for (int i = 0; i < count; i++) result.Span<ushort>()[i] = (ushort)t.Int32Data[i]; break;
            case DType.I8: for (int i = 0; i < count; i++) result.Span<sbyte>()[i] = (sbyte)t.Int32Data[i]; break;
            default: for (int i = 0; i < count; i++) result.Data.Span[i] = (byte)t.Int32Data[i]; break;
        }
        return result;
    }

    private Tensor ReadExternal(TensorProto t, DType dtype, int[] shape)
    {
        string? location = null;
        long offset = 0, length = -1;
        foreach (var kv in t.ExternalData)
        {
            switch (kv.Key)
            {
                case "location": location = kv.Value; break;
                case "offset":
                    if (!long.TryParse(kv.Value, out offset) || offset < 0) throw new InvalidFileException(Path, $"initializer '{t.Name}': invalid external offset '{kv.Value}'");
                    break;
                case "length":
                    if (!long.TryParse(kv.Value, out length) || length < 0) throw new InvalidFileException(Path, $"initializer '{t.Name}': invalid external length '{kv.Value}'");
                    break;
            }
        }
        if (string.IsNullOrEmpty(location)) throw new InvalidFileException(Path, $"initializer '{t.Name}': external data without a location");
        var file = ResolveExternalLocation(location, t.Name);
        long bytes = Shapes.Numel(shape) * dtype.Size();
        if (length >= 0 && length != bytes)
            throw new InvalidFileException(Path, $"initializer '{t.Name}': {dtype}{Shapes.Format(shape)} needs {bytes} bytes, external length says {length}");
        if (bytes > int.MaxValue) throw new InvalidFileException(Path, $"initializer '{t.Name}' is larger than 2 GiB");
        var mapped = Map(file, t.Name);
        if (offset > mapped.Length - bytes) // not offset + bytes: a huge offset would overflow past the check
            throw new InvalidFileException(file, $"initializer '{t.Name}' at offset {offset} (+{bytes} bytes) lies past the end of the file ({mapped.Length} bytes)");
        return new Tensor(dtype, shape, mapped.Slice(offset, (int)bytes));
    }

    /// <summary>External locations are relative paths inside the model's folder; anything else is refused.</summary>
    private string ResolveExternalLocation(string location, string tensorName)
    {
        if (System.IO.Path.IsPathRooted(location) || location.Contains(':') || location.Split('/', '\\').Any(p => p == ".."))
            throw new InvalidFileException(Path, $"initializer '{tensorName}': external data location '{location}' leaves the model's folder");
        var full = System.IO.Path.GetFullPath(System.IO.Path.Combine(Directory, location));
        var root = Directory.EndsWith(System.IO.Path.DirectorySeparatorChar) ? Directory : Directory + System.IO.Path.DirectorySeparatorChar;
        if (!full.StartsWith(root, StringComparison.Ordinal))
            throw new InvalidFileException(Path, $"initializer '{tensorName}': external data location '{location}' leaves the model's folder");
        var info = new FileInfo(full);
        if (info.LinkTarget != null)
        {
            var target = info.ResolveLinkTarget(true)?.FullName ?? full;
            if (!target.StartsWith(root, StringComparison.Ordinal))
                throw new InvalidFileException(Path, $"initializer '{tensorName}': external data '{location}' is a link that leaves the model's folder");
        }
        if (!info.Exists) throw new ExternalDataMissingException(Path, $"external data file '{location}' (for initializer '{tensorName}') not found beside the model");
        return full;
    }

    private MappedFile Map(string file, string tensorName)
    {
        if (!_mapped.TryGetValue(file, out var m))
        {
            m = new MappedFile(file);
            _mapped[file] = m;
        }
        return m;
    }

    public void Dispose()
    {
        foreach (var m in _mapped.Values) m.Dispose();
        _mapped.Clear();
    }

    /// <summary>
    /// Drops the pages of the external weight files from this process's resident set (Linux: madvise DONTNEED; a no-op
    /// elsewhere). Call it when the weights were copied out (a half-precision model widened to fp32 on load): the read-only
    /// file pages would otherwise stay resident beside their copies until the model is closed. Safe while tensors still view
    /// the map: a page touched again is read back from the page cache.
    /// </summary>
    public void ReleaseResidentPages()
    {
        foreach (var m in _mapped.Values) m.ReleaseResidentPages();
    }

    /// <summary>A read-only memory map of a whole file; slices are tensors' storage.</summary>
    private sealed unsafe class MappedFile : IDisposable
    {
        private readonly MemoryMappedFile? _map;
        private readonly MemoryMappedViewAccessor? _view;
        private readonly byte* _base;
        public long Length { get; }

        public MappedFile(string path)
        {
            Length = new FileInfo(path).Length;
            if (Length == 0) return;
            _map = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
            _view = _map.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
            byte* p = null;
            _view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
            _base = p + _view.PointerOffset;
        }

        public Memory<byte> Slice(long offset, int length) =>
            length == 0 ? Memory<byte>.Empty : new UnmanagedMemory(_base + offset, length, this).Memory;

        public void ReleaseResidentPages()
        {
            if (_view == null || !OperatingSystem.IsLinux()) return;
            // The mapping starts on a page boundary (_base - PointerOffset); madvise wants that start and the mapped length.
            byte* start = _base - _view.PointerOffset;
            _ = Madvise(start, (nuint)(Length + _view.PointerOffset), MadviseDontNeed);
        }

        public void Dispose()
        {
            if (_view != null)
            {
                _view.SafeMemoryMappedViewHandle.ReleasePointer();
                _view.Dispose();
            }
            _map?.Dispose();
        }
    }
}

/// <summary>The model refers to an external weights file that is not there.</summary>
public sealed class ExternalDataMissingException : CudaDreamException
{
    public ExternalDataMissingException(string path, string problem) : base($"{path}: {problem}") { }
}

public sealed partial class OnnxModel
{
    private const int MadviseDontNeed = 4; // MADV_DONTNEED (Linux)

    [LibraryImport("libc", EntryPoint = "madvise")]
    private static unsafe partial int Madvise(byte* address, nuint length, int advice);
}
