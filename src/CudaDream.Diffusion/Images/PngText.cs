using System.Buffers.Binary;
using System.IO.Hashing;
using System.Text;
using CudaDream.Engine;

namespace CudaDream.Diffusion.Images;

/// <summary>
/// PNG text chunks (PNG spec §11.3.4): written into an encoded PNG right after IHDR, where readers such as
/// AUTOMATIC1111's "PNG Info" find them, and read back with every length bounded. Text that Latin-1 can hold
/// goes into tEXt; anything else into an uncompressed iTXt chunk in UTF-8 (what Pillow's add_text does).
/// </summary>
public static class PngText
{
    public static ReadOnlySpan<byte> Signature => [0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A];
    private const int MaxTextChunkBytes = 16 << 20;
    private const int MaxChunks = 1 << 20;
    private static readonly Encoding Latin1Strict = Encoding.GetEncoding("ISO-8859-1", EncoderFallback.ExceptionFallback, DecoderFallback.ExceptionFallback);

    /// <summary>Inserts one text chunk per entry after IHDR. Keywords: 1–79 Latin-1 characters, no NUL.</summary>
    public static byte[] Insert(ReadOnlySpan<byte> png, IEnumerable<KeyValuePair<string, string>> entries)
    {
        if (png.Length < 33 || !png[..8].SequenceEqual(Signature) || !png.Slice(12, 4).SequenceEqual("IHDR"u8))
            throw new ArgumentException("not a PNG that starts with IHDR");
        int afterIhdr = 8 + 12 + (int)BinaryPrimitives.ReadUInt32BigEndian(png[8..]);
        using var output = new MemoryStream(png.Length + 1024);
        output.Write(png[..afterIhdr]);
        foreach (var (keyword, text) in entries) WriteChunk(output, TextChunk(keyword, text, out var type), type);
        output.Write(png[afterIhdr..]);
        return output.ToArray();
    }

    private static byte[] TextChunk(string keyword, string text, out string type)
    {
        if (keyword.Length is 0 or > 79 || keyword.Contains('\0') || keyword.Any(c => c > 0xFF))
            throw new ArgumentException($"PNG text keyword {keyword} must be 1-79 Latin-1 characters");
        var key = Encoding.Latin1.GetBytes(keyword);
        byte[]? latin1 = TryLatin1(text);
        if (latin1 != null)
        {
            type = "tEXt";
            return [.. key, 0, .. latin1];
        }
        // iTXt: keyword, NUL, compression flag 0, method 0, empty language tag + NUL, empty translated keyword + NUL, UTF-8 text.
        type = "iTXt";
        return [.. key, 0, 0, 0, 0, 0, .. Encoding.UTF8.GetBytes(text)];
    }

    private static byte[]? TryLatin1(string text)
    {
        try { return Latin1Strict.GetBytes(text); }
        catch (EncoderFallbackException) { return null; }
    }

    private static void WriteChunk(Stream output, byte[] data, string type)
    {
        Span<byte> word = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(word, (uint)data.Length);
        output.Write(word);
        var typeAndData = new byte[4 + data.Length];
        Encoding.ASCII.GetBytes(type, typeAndData);
        data.CopyTo(typeAndData, 4);
        output.Write(typeAndData);
        BinaryPrimitives.WriteUInt32BigEndian(word, Crc32.HashToUInt32(typeAndData));
        output.Write(word);
    }

    /// <summary>The tEXt and iTXt entries of a PNG file, in file order (a repeated keyword keeps its first value).
    /// A text chunk with a wrong CRC or an impossible length is an error; other chunks are skipped unread.</summary>
    public static IReadOnlyDictionary<string, string> Read(string path)
    {
        using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        Span<byte> header = stackalloc byte[8];
        if (fs.ReadAtLeast(header, 8, throwOnEndOfStream: false) < 8 || !header.SequenceEqual(Signature))
            throw new InvalidFileException(path, "not a PNG file");
        var entries = new Dictionary<string, string>();
        Span<byte> crc = stackalloc byte[4];
        for (int chunk = 0; chunk < MaxChunks; chunk++)
        {
            if (fs.ReadAtLeast(header, 8, throwOnEndOfStream: false) < 8)
                throw new InvalidFileException(path, "truncated PNG (no IEND chunk)");
            uint length = BinaryPrimitives.ReadUInt32BigEndian(header);
            string type = Encoding.ASCII.GetString(header[4..]);
            if (length > int.MaxValue || fs.Position + length + 4 > fs.Length)
                throw new InvalidFileException(path, $"{type} chunk of {length} bytes runs past the end of the file");
            if (type == "IEND") return entries;
            if (type is not ("tEXt" or "iTXt"))
            {
                fs.Seek(length + 4, SeekOrigin.Current);
                continue;
            }
            if (length > MaxTextChunkBytes)
                throw new InvalidFileException(path, $"{type} chunk of {length} bytes (limit {MaxTextChunkBytes >> 20} MiB)");
            var typeAndData = new byte[4 + length];
            header[4..].CopyTo(typeAndData);
            fs.ReadExactly(typeAndData, 4, (int)length);
            fs.ReadExactly(crc);
            if (BinaryPrimitives.ReadUInt32BigEndian(crc) != Crc32.HashToUInt32(typeAndData))
                throw new InvalidFileException(path, $"{type} chunk has a wrong CRC");
            var (key, value) = ParseText(path, type, typeAndData.AsSpan(4));
            if (value != null) entries.TryAdd(key, value);
        }
        throw new InvalidFileException(path, $"more than {MaxChunks} chunks");
    }

    private static (string Key, string? Value) ParseText(string path, string type, ReadOnlySpan<byte> data)
    {
        int nul = data.IndexOf((byte)0);
        if (nul <= 0) throw new InvalidFileException(path, $"{type} chunk without a keyword");
        string key = Encoding.Latin1.GetString(data[..nul]);
        var rest = data[(nul + 1)..];
        if (type == "tEXt") return (key, Encoding.Latin1.GetString(rest));
        // iTXt: compression flag, method, language tag NUL, translated keyword NUL, text.
        if (rest.Length < 2) throw new InvalidFileException(path, "iTXt chunk too short");
        bool compressed = rest[0] != 0;
        rest = rest[2..];
        for (int field = 0; field < 2; field++)
        {
            int end = rest.IndexOf((byte)0);
            if (end < 0) throw new InvalidFileException(path, "iTXt chunk fields are not NUL-terminated");
            rest = rest[(end + 1)..];
        }
        return compressed ? (key, null) : (key, Encoding.UTF8.GetString(rest));
    }
}
