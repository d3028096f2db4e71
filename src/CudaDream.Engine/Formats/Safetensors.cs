using System.IO.MemoryMappedFiles;
using System.Text;
using System.Text.Json;
using CudaDream.Engine.Tensors;

namespace CudaDream.Engine.Formats;

/// <summary>One entry of a safetensors header.</summary>
public sealed record SafetensorsEntry(string Name, DType DType, int[] Shape, long Begin, long End);

/// <summary>
/// A safetensors file opened read-only through a memory map. Tensors returned by <see cref="Get"/>
/// view the mapped bytes (no copy) and stay valid until the file is disposed.
/// Format: u64 little-endian header length N, N bytes of JSON
/// <c>{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}</c>, then the data.
/// Every size and offset is checked before use: a header that points outside the file, overlaps,
/// lies about lengths or is absurdly large is refused with an error naming the file.
/// </summary>
public sealed unsafe class SafetensorsFile : IDisposable
{
    /// <summary>Same bound as the reference implementation: headers above 100 MB are refused.</summary>
    public const long MaxHeaderBytes = 100_000_000;
    public const int MaxRank = 16;

    private readonly MemoryMappedFile? _map;
    private readonly MemoryMappedViewAccessor? _view;
    private readonly byte* _base;
    private readonly long _dataStart;
    private readonly Dictionary<string, SafetensorsEntry> _entries;
    private bool _disposed;

    public string Path { get; }
    public IReadOnlyDictionary<string, string> Metadata { get; }
    public IReadOnlyCollection<SafetensorsEntry> Entries => _entries.Values;
    public IEnumerable<string> Names => _entries.Keys;

    private SafetensorsFile(string path)
    {
        Path = path;
        long fileLength;
        try { fileLength = new FileInfo(path).Length; }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new InvalidFileException(path, e.Message); }
        if (!File.Exists(path)) throw new InvalidFileException(path, "file not found");
        if (fileLength < 8) throw new InvalidFileException(path, $"not a safetensors file: {fileLength} bytes is shorter than the 8-byte header length");

        _map = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        _view = _map.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
        byte* p = null;
        _view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
        _base = p + _view.PointerOffset;
        try
        {
            // The format's length is an unsigned u64 (little-endian on every platform .NET runs this engine on): read as
            // such, a file starting with 0xFF bytes reports 18446744073709551615, never a negative length.
            ulong declared = *(ulong*)_base;
            if (declared < 2 || declared > MaxHeaderBytes)
                throw new InvalidFileException(path, $"header length {declared} is out of range (2..{MaxHeaderBytes})");
            long headerLen = (long)declared;
            if (8 + headerLen > fileLength)
                throw new InvalidFileException(path, $"header length {headerLen} runs past the end of the file ({fileLength} bytes): truncated or not safetensors");
            _dataStart = 8 + headerLen;
            long dataLength = fileLength - _dataStart;
            var header = new ReadOnlySpan<byte>(_base + 8, (int)headerLen);
            (_entries, Metadata) = ParseHeader(path, header, dataLength);
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    public static SafetensorsFile Open(string path)
    {
        if (!File.Exists(path)) throw new InvalidFileException(path, "file not found");
        return new SafetensorsFile(path);
    }

    public bool Contains(string name) => _entries.ContainsKey(name);

    public SafetensorsEntry Entry(string name) =>
        _entries.TryGetValue(name, out var e) ? e : throw new InvalidFileException(Path, $"no tensor named '{name}'");

    /// <summary>The tensor as a view of the mapped file (valid until <see cref="Dispose"/>).</summary>
    public Tensor Get(string name)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var e = Entry(name);
        long len = e.End - e.Begin;
        if (len > int.MaxValue) throw new InvalidFileException(Path, $"tensor '{name}' is larger than 2 GiB");
        var mem = new UnmanagedMemory(_base + _dataStart + e.Begin, (int)len, this);
        return new Tensor(e.DType, e.Shape, mem.Memory);
    }

    /// <summary>The tensor copied into managed memory (independent of this file's lifetime).</summary>
    public Tensor Load(string name) => Get(name).Clone();

    public Dictionary<string, Tensor> LoadAll() => _entries.Keys.ToDictionary(k => k, Load);

    private static (Dictionary<string, SafetensorsEntry>, Dictionary<string, string>) ParseHeader(string path, ReadOnlySpan<byte> header, long dataLength)
    {
        Utf8Text.Require(path, header, "the header");
        JsonDocument doc;
        try
        {
            // Trailing spaces are the format's padding.
            doc = JsonDocument.Parse(header.ToArray(), new JsonDocumentOptions { MaxDepth = 8 });
        }
        catch (JsonException e) { throw new InvalidFileException(path, $"header is not valid JSON ({e.Message})"); }
        using var _ = doc;
        if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new InvalidFileException(path, "header is not a JSON object");

        var entries = new Dictionary<string, SafetensorsEntry>(StringComparer.Ordinal);
        var meta = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var prop in doc.RootElement.EnumerateObject())
        {
            if (prop.Name == "__metadata__")
            {
                if (prop.Value.ValueKind != JsonValueKind.Object) throw new InvalidFileException(path, "__metadata__ is not an object");
                foreach (var m in prop.Value.EnumerateObject())
                {
                    if (m.Value.ValueKind != JsonValueKind.String) throw new InvalidFileException(path, $"__metadata__ value '{m.Name}' is not a string");
                    meta[m.Name] = m.Value.GetString()!;
                }
                continue;
            }
            if (entries.ContainsKey(prop.Name)) throw new InvalidFileException(path, $"tensor '{prop.Name}' appears twice in the header");
            entries[prop.Name] = ParseEntry(path, prop.Name, prop.Value, dataLength);
        }

        // No two tensors may share bytes.
        var sorted = entries.Values.Where(e => e.End > e.Begin).OrderBy(e => e.Begin).ToList();
        for (int i = 1; i < sorted.Count; i++)
            if (sorted[i].Begin < sorted[i - 1].End)
                throw new InvalidFileException(path, $"tensors '{sorted[i - 1].Name}' and '{sorted[i].Name}' overlap (bytes {sorted[i].Begin}..{sorted[i - 1].End})");
        return (entries, meta);
    }

    private static SafetensorsEntry ParseEntry(string path, string name, JsonElement v, long dataLength)
    {
        string Bad(string what) => $"tensor '{name}': {what}";
        if (v.ValueKind != JsonValueKind.Object) throw new InvalidFileException(path, Bad("entry is not an object"));
        if (!v.TryGetProperty("dtype", out var dt) || dt.ValueKind != JsonValueKind.String)
            throw new InvalidFileException(path, Bad("missing dtype"));
        if (!DTypes.TryParseSafetensors(dt.GetString()!, out var dtype))
            throw new InvalidFileException(path, Bad($"unsupported dtype '{dt.GetString()}'"));
        if (!v.TryGetProperty("shape", out var sh) || sh.ValueKind != JsonValueKind.Array)
            throw new InvalidFileException(path, Bad("missing shape"));
        if (sh.GetArrayLength() > MaxRank) throw new InvalidFileException(path, Bad($"rank {sh.GetArrayLength()} exceeds {MaxRank}"));
        var shape = new int[sh.GetArrayLength()];
        long numel = 1;
        int i = 0;
        foreach (var d in sh.EnumerateArray())
        {
            if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt64(out long dim) || dim < 0 || dim > int.MaxValue)
                throw new InvalidFileException(path, Bad($"invalid dimension {d}"));
            shape[i++] = (int)dim;
            if (dim != 0 && numel > long.MaxValue / 16 / dim) throw new InvalidFileException(path, Bad("element count overflows"));
            numel *= dim;
        }
        if (!v.TryGetProperty("data_offsets", out var off) || off.ValueKind != JsonValueKind.Array || off.GetArrayLength() != 2)
            throw new InvalidFileException(path, Bad("missing data_offsets [begin, end]"));
        var o = off.EnumerateArray().ToArray();
        if (!o[0].TryGetInt64(out long begin) || !o[1].TryGetInt64(out long end))
            throw new InvalidFileException(path, Bad("data_offsets are not integers"));
        if (begin < 0 || end < begin) throw new InvalidFileException(path, Bad($"invalid data_offsets [{begin}, {end}]"));
        if (end > dataLength)
            throw new InvalidFileException(path, Bad($"data_offsets [{begin}, {end}] point past the end of the data ({dataLength} bytes): truncated file?"));
        long expected = numel * dtype.Size();
        if (end - begin != expected)
            throw new InvalidFileException(path, Bad($"{dtype.SafetensorsName()}{Shapes.Format(shape)} needs {expected} bytes but data_offsets span {end - begin}"));
        return new SafetensorsEntry(name, dtype, shape, begin, end);
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        if (_view != null)
        {
            _view.SafeMemoryMappedViewHandle.ReleasePointer();
            _view.Dispose();
        }
        _map?.Dispose();
    }

    /// <summary>Reads every tensor into managed memory and closes the file.</summary>
    public static Dictionary<string, Tensor> ReadAll(string path)
    {
        using var f = Open(path);
        return f.LoadAll();
    }
}

/// <summary>Writes safetensors files atomically (temp + rename), tensors in sorted-name order, header padded to 8 bytes.</summary>
public static class SafetensorsWriter
{
    public static void Write(string path, IEnumerable<KeyValuePair<string, Tensor>> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var list = tensors.OrderBy(kv => kv.Key, StringComparer.Ordinal).ToList();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var kv in list)
        {
            if (kv.Key == "__metadata__") throw new ArgumentException("'__metadata__' is reserved in safetensors");
            if (!seen.Add(kv.Key)) throw new ArgumentException($"tensor '{kv.Key}' given twice");
        }
        var header = BuildHeader(list, metadata);
        AtomicFile.Write(path, s =>
        {
            Span<byte> len = stackalloc byte[8];
            BitConverter.TryWriteBytes(len, (long)header.Length);
            s.Write(len);
            s.Write(header);
            foreach (var kv in list) s.Write(kv.Value.Data.Span);
        });
    }

    public static void Write(string path, IReadOnlyDictionary<string, Tensor> tensors, IReadOnlyDictionary<string, string>? metadata = null) =>
        Write(path, (IEnumerable<KeyValuePair<string, Tensor>>)tensors, metadata);

    private static byte[] BuildHeader(List<KeyValuePair<string, Tensor>> list, IReadOnlyDictionary<string, string>? metadata)
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms))
        {
            w.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                w.WriteStartObject("__metadata__");
                foreach (var kv in metadata.OrderBy(k => k.Key, StringComparer.Ordinal)) w.WriteString(kv.Key, kv.Value);
                w.WriteEndObject();
            }
            long offset = 0;
            foreach (var kv in list)
            {
                var t = kv.Value;
                if (t.DType is not (DType.F32 or DType.F16 or DType.BF16 or DType.F64 or DType.I64 or DType.I32 or DType.I16 or DType.I8 or DType.U8 or DType.Bool))
                    throw new ArgumentException($"dtype {t.DType} cannot be stored in safetensors");
                w.WriteStartObject(kv.Key);
                w.WriteString("dtype", t.DType.SafetensorsName());
                w.WriteStartArray("shape");
                foreach (var d in t.Shape) w.WriteNumberValue(d);
                w.WriteEndArray();
                w.WriteStartArray("data_offsets");
                w.WriteNumberValue(offset);
                offset += t.ByteLength;
                w.WriteNumberValue(offset);
                w.WriteEndArray();
                w.WriteEndObject();
            }
            w.WriteEndObject();
        }
        var bytes = ms.ToArray();
        int padded = (bytes.Length + 7) / 8 * 8;
        var result = new byte[padded];
        bytes.CopyTo(result, 0);
        for (int i = bytes.Length; i < padded; i++) result[i] = (byte)' ';
        return result;
    }
}
