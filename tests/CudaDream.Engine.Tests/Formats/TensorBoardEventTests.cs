using System.Buffers.Binary;
using System.Numerics;
using System.Text;
using CudaDream.Engine.Formats;
using Xunit;

namespace CudaDream.Engine.Tests.Formats;

/// <summary>
/// The event file read back by a parser written here from TensorFlow's record and message definitions: framing and
/// CRCs checked with the processor's CRC-32C instruction (System.Numerics.BitOperations, not the writer's table), the
/// protobuf wire format decoded by hand (not Google.Protobuf, which the writer uses).
/// </summary>
public class TensorBoardEventTests
{
    private static uint HardwareCrc32C(ReadOnlySpan<byte> data)
    {
        uint crc = 0xFFFFFFFFu;
        foreach (var b in data) crc = BitOperations.Crc32C(crc, b);
        return ~crc;
    }

    private static uint Masked(uint crc) => ((crc >> 15) | (crc << 17)) + 0xa282ead8;

    [Fact]
    public void Crc32C_matches_the_published_check_value()
    {
        // The CRC-32C check value of "123456789" (RFC 3720 / the CRC catalogue): 0xE3069283.
        Assert.Equal(0xE3069283u, TensorBoardEventWriter.Crc32C(Encoding.ASCII.GetBytes("123456789")));
        Assert.Equal(0xE3069283u, HardwareCrc32C(Encoding.ASCII.GetBytes("123456789")));
    }

    /// <summary>Fields of one message: (field number, wire type, varint / fixed value or bytes).</summary>
    private static List<(int Field, int Type, ulong Number, byte[] Bytes)> Decode(ReadOnlySpan<byte> m)
    {
        var fields = new List<(int, int, ulong, byte[])>();
        int i = 0;
        ulong Varint(ReadOnlySpan<byte> s)
        {
            ulong v = 0;
            for (int shift = 0; ; shift += 7)
            {
                byte b = s[i++];
                v |= (ulong)(b & 0x7F) << shift;
                if (b < 0x80) return v;
            }
        }
        while (i < m.Length)
        {
            ulong key = Varint(m);
            int field = (int)(key >> 3), type = (int)(key & 7);
            switch (type)
            {
                case 0: fields.Add((field, type, Varint(m), [])); break;
                case 1: fields.Add((field, type, BinaryPrimitives.ReadUInt64LittleEndian(m[i..]), [])); i += 8; break;
                case 2: { int n = (int)Varint(m); fields.Add((field, type, 0, m.Slice(i, n).ToArray())); i += n; break; }
                case 5: fields.Add((field, type, BinaryPrimitives.ReadUInt32LittleEndian(m[i..]), [])); i += 4; break;
                default: throw new InvalidDataException($"wire type {type}");
            }
        }
        return fields;
    }

    private static List<byte[]> Records(byte[] file)
    {
        var records = new List<byte[]>();
        int at = 0;
        while (at < file.Length)
        {
            ulong length = BinaryPrimitives.ReadUInt64LittleEndian(file.AsSpan(at));
            Assert.Equal(Masked(HardwareCrc32C(file.AsSpan(at, 8))), BinaryPrimitives.ReadUInt32LittleEndian(file.AsSpan(at + 8)));
            var payload = file.AsSpan(at + 12, (int)length);
            Assert.Equal(Masked(HardwareCrc32C(payload)), BinaryPrimitives.ReadUInt32LittleEndian(file.AsSpan(at + 12 + (int)length)));
            records.Add(payload.ToArray());
            at += 12 + (int)length + 4;
        }
        Assert.Equal(file.Length, at);
        return records;
    }

    [Fact]
    public void Every_scalar_and_image_reads_back()
    {
        var dir = Path.Combine(Path.GetTempPath(), "cudadream-tb-" + Guid.NewGuid().ToString("N"));
        try
        {
            var png = new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G', 13, 10, 26, 10, 1, 2, 3 };
            string path;
            using (var w = new TensorBoardEventWriter(dir))
            {
                path = w.Path;
                w.AddScalar("loss/train", 1, 0.25);
                w.AddScalar("lr", 1, 1e-4);
                w.AddScalar("loss/train", 2, 0.125);
                w.AddScalar("loss/validation", 2, 0.5);
                w.AddImage("samples", 2, 64, 32, png);
            }
            Assert.Contains("tfevents", Path.GetFileName(path));
            var records = Records(File.ReadAllBytes(path));
            Assert.Equal(6, records.Count);

            // Event 0: wall_time (1, double) and file_version (3) "brain.Event:2".
            var first = Decode(records[0]);
            Assert.Contains(first, f => f.Field == 1 && f.Type == 1 && BitConverter.UInt64BitsToDouble(f.Number) > 1.6e9);
            Assert.Equal("brain.Event:2", Encoding.UTF8.GetString(first.Single(f => f.Field == 3).Bytes));

            var scalars = new List<(long Step, string Tag, float Value)>();
            var images = new List<(long Step, string Tag, long H, long W, long Colorspace, byte[] Png)>();
            foreach (var r in records.Skip(1))
            {
                var e = Decode(r);
                long step = (long)(e.SingleOrDefault(f => f.Field == 2).Number);
                var summary = Decode(e.Single(f => f.Field == 5).Bytes);
                foreach (var value in summary.Where(f => f.Field == 1).Select(f => Decode(f.Bytes)))
                {
                    var tag = Encoding.UTF8.GetString(value.Single(f => f.Field == 1).Bytes);
                    if (value.Any(f => f.Field == 2))
                        scalars.Add((step, tag, BitConverter.UInt32BitsToSingle((uint)value.Single(f => f.Field == 2 && f.Type == 5).Number)));
                    else
                    {
                        var image = Decode(value.Single(f => f.Field == 4).Bytes);
                        images.Add((step, tag, (long)image.Single(f => f.Field == 1).Number, (long)image.Single(f => f.Field == 2).Number,
                            (long)image.Single(f => f.Field == 3).Number, image.Single(f => f.Field == 4).Bytes));
                    }
                }
            }
            Assert.Equal(new[] { (1L, "loss/train", 0.25f), (1L, "lr", 1e-4f), (2L, "loss/train", 0.125f), (2L, "loss/validation", 0.5f) }, scalars);
            var img = Assert.Single(images);
            Assert.Equal((2L, "samples", 32L, 64L, 3L), (img.Step, img.Tag, img.H, img.W, img.Colorspace));
            Assert.Equal(png, img.Png);
        }
        finally { if (Directory.Exists(dir) && Environment.GetEnvironmentVariable("KEEP_TB") == null) Directory.Delete(dir, true); }
    }
}
