using System.Buffers.Binary;
using Google.Protobuf;

namespace CudaDream.Engine.Formats;

/// <summary>
/// Writes a TensorBoard event file (<c>events.out.tfevents.&lt;time&gt;.&lt;host&gt;</c>) that <c>tensorboard --logdir</c>
/// reads: TFRecord framing — per record the payload length (uint64, little-endian), the masked CRC-32C of those 8 bytes,
/// the payload, the masked CRC-32C of the payload — around <c>tensorflow.Event</c> protobufs (event.proto, summary.proto):
/// the first carries <c>file_version "brain.Event:2"</c>, the others a <c>Summary</c> with scalar values
/// (<c>simple_value</c>) or images (<c>Summary.Image</c>: height, width, colorspace, PNG bytes). The messages are
/// encoded with Google.Protobuf's wire-format writer, field numbers as in TensorFlow's .proto files. Each record is
/// appended and flushed as it is written, so a killed run keeps what it logged.
/// </summary>
public sealed class TensorBoardEventWriter : IDisposable
{
    // tensorflow.Event
    private const int EventWallTime = 1, EventStep = 2, EventFileVersion = 3, EventSummary = 5;
    // tensorflow.Summary / Summary.Value / Summary.Image
    private const int SummaryValue = 1, ValueTag = 1, ValueSimple = 2, ValueImage = 4;
    private const int ImageHeight = 1, ImageWidth = 2, ImageColorspace = 3, ImageEncoded = 4;
    private const uint MaskDelta = 0xa282ead8;

    private readonly FileStream _file;
    public string Path { get; }

    /// <summary>Creates a new event file in <paramref name="directory"/> (created when missing).</summary>
    public TensorBoardEventWriter(string directory, DateTimeOffset? now = null)
    {
        Directory.CreateDirectory(directory);
        var time = now ?? DateTimeOffset.UtcNow;
        var host = string.Concat(Environment.MachineName.Where(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_'));
        Path = System.IO.Path.Combine(directory, $"events.out.tfevents.{time.ToUnixTimeSeconds()}.{(host.Length > 0 ? host : "localhost")}.{Environment.ProcessId}");
        _file = new FileStream(Path, FileMode.CreateNew, FileAccess.Write, FileShare.Read);
        WriteEvent(time, 0, o => { o.WriteTag(EventFileVersion, WireFormat.WireType.LengthDelimited); o.WriteString("brain.Event:2"); });
    }

    public void AddScalar(string tag, int step, double value, DateTimeOffset? time = null) =>
        WriteSummary(time, step, v =>
        {
            v.WriteTag(ValueTag, WireFormat.WireType.LengthDelimited); v.WriteString(tag);
            v.WriteTag(ValueSimple, WireFormat.WireType.Fixed32); v.WriteFloat((float)value);
        });

    /// <summary>An image summary: <paramref name="png"/> is the encoded PNG of a <paramref name="width"/>×<paramref name="height"/> RGB image.</summary>
    public void AddImage(string tag, int step, int width, int height, byte[] png, DateTimeOffset? time = null) =>
        WriteSummary(time, step, v =>
        {
            v.WriteTag(ValueTag, WireFormat.WireType.LengthDelimited); v.WriteString(tag);
            v.WriteTag(ValueImage, WireFormat.WireType.LengthDelimited); v.WriteBytes(Message(i =>
            {
                i.WriteTag(ImageHeight, WireFormat.WireType.Varint); i.WriteInt32(height);
                i.WriteTag(ImageWidth, WireFormat.WireType.Varint); i.WriteInt32(width);
                i.WriteTag(ImageColorspace, WireFormat.WireType.Varint); i.WriteInt32(3); // RGB
                i.WriteTag(ImageEncoded, WireFormat.WireType.LengthDelimited); i.WriteBytes(ByteString.CopyFrom(png));
            }));
        });

    private void WriteSummary(DateTimeOffset? time, int step, Action<CodedOutputStream> value) =>
        WriteEvent(time ?? DateTimeOffset.UtcNow, step, e =>
        {
            e.WriteTag(EventSummary, WireFormat.WireType.LengthDelimited);
            e.WriteBytes(Message(s => { s.WriteTag(SummaryValue, WireFormat.WireType.LengthDelimited); s.WriteBytes(Message(value)); }));
        });

    private void WriteEvent(DateTimeOffset time, long step, Action<CodedOutputStream> body)
    {
        var payload = Message(e =>
        {
            e.WriteTag(EventWallTime, WireFormat.WireType.Fixed64); e.WriteDouble(time.ToUnixTimeMilliseconds() / 1000.0);
            if (step != 0) { e.WriteTag(EventStep, WireFormat.WireType.Varint); e.WriteInt64(step); }
            body(e);
        }).ToByteArray();
        var header = new byte[12];
        BinaryPrimitives.WriteUInt64LittleEndian(header, (ulong)payload.Length);
        BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(8), MaskedCrc(header.AsSpan(0, 8)));
        var footer = new byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(footer, MaskedCrc(payload));
        FaultInjection.At("tensorboard-event");
        try
        {
            _file.Write(header);
            _file.Write(payload);
            _file.Write(footer);
            _file.Flush();
        }
        catch (IOException e) { throw new WriteFailedException(Path, e); }
    }

    private static ByteString Message(Action<CodedOutputStream> write)
    {
        using var buffer = new MemoryStream();
        var output = new CodedOutputStream(buffer, leaveOpen: true);
        write(output);
        output.Flush();
        return ByteString.CopyFrom(buffer.ToArray());
    }

    /// <summary>TFRecord's masked CRC: ((crc &gt;&gt; 15) | (crc &lt;&lt; 17)) + 0xa282ead8 over CRC-32C (Castagnoli).</summary>
    public static uint MaskedCrc(ReadOnlySpan<byte> data)
    {
        uint crc = Crc32C(data);
        return ((crc >> 15) | (crc << 17)) + MaskDelta;
    }

    private static readonly uint[] Table = BuildTable();

    private static uint[] BuildTable()
    {
        var t = new uint[256];
        for (uint i = 0; i < 256; i++)
        {
            uint c = i;
            for (int k = 0; k < 8; k++) c = (c & 1) != 0 ? 0x82F63B78u ^ (c >> 1) : c >> 1; // reflected Castagnoli polynomial
            t[i] = c;
        }
        return t;
    }

    /// <summary>CRC-32C (iSCSI, Castagnoli): reflected, initial value and final xor 0xFFFFFFFF.</summary>
    public static uint Crc32C(ReadOnlySpan<byte> data)
    {
        uint crc = 0xFFFFFFFFu;
        foreach (var b in data) crc = Table[(crc ^ b) & 0xFF] ^ (crc >> 8);
        return crc ^ 0xFFFFFFFFu;
    }

    public void Dispose() => _file.Dispose();
}
