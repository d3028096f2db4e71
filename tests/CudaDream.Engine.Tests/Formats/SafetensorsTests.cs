using System.Text;
using CudaDream.Engine;
using CudaDream.Engine.Formats;
using CudaDream.Engine.Tensors;
using CudaDream.TestSupport;
using Xunit;

namespace CudaDream.Engine.Tests.Formats;

public class SafetensorsTests
{
    [Fact]
    public void ReadsFixtureWrittenByPyTorch()
    {
        using var f = SafetensorsFile.Open(Fixtures.SdTiny("refs/unet.safetensors"));
        var sample = f.Get("sample");
        Assert.Equal(DType.F32, sample.DType);
        Assert.Equal(new[] { 2, 4, 16, 16 }, sample.Shape);
        var t = f.Get("timestep").ToFloat32Array();
        Assert.Equal(new float[] { 10, 999 }, t);
    }

    [Fact]
    public void RoundTripsEveryDTypeAndMetadata()
    {
        using var dir = Fixtures.TempDir();
        var path = dir.File("rt.safetensors");
        var tensors = new Dictionary<string, Tensor>
        {
            ["f32"] = Tensor.FromArray(new float[] { 1.5f, -2f, 3f }, 3),
            ["f16"] = Tensor.FromArray(new float[] { 0.5f, 1f, -4f, 65504f }, 2, 2).To(DType.F16),
            ["bf16"] = Tensor.FromArray(new float[] { 0.5f, 1f, -4f, 3.140625f }, 4).To(DType.BF16),
            ["i32"] = Tensor.FromArray(new[] { 1, -7 }, 2),
            ["i64"] = Tensor.FromArray(new long[] { long.MaxValue, -3 }, 1, 2),
            ["u8"] = new Tensor(DType.U8, new[] { 3 }, new byte[] { 0, 128, 255 }),
            ["scalar"] = Tensor.FromArray(new float[] { 4f }),
        };
        tensors["scalar"] = tensors["scalar"].Reshape();
        var meta = new Dictionary<string, string> { ["ss_network_dim"] = "4" };
        SafetensorsWriter.Write(path, tensors, meta);

        using var f = SafetensorsFile.Open(path);
        Assert.Equal("4", f.Metadata["ss_network_dim"]);
        foreach (var (name, t) in tensors)
        {
            var r = f.Get(name);
            Assert.Equal(t.DType, r.DType);
            Assert.Equal(t.Shape, r.Shape);
            Assert.Equal(t.Data.ToArray(), r.Data.ToArray());
        }
        Assert.Equal(new float[] { 0.5f, 1f, -4f, 65504f }, f.Get("f16").ToFloat32Array());
        Assert.Empty(f.Get("scalar").Shape);
        // Header is padded to 8 bytes and no temp file is left behind.
        long headerLen = BitConverter.ToInt64(File.ReadAllBytes(path), 0);
        Assert.Equal(0, headerLen % 8);
        Assert.Single(Directory.GetFiles(dir.FullName));
    }

    private static string WriteRaw(TempDir dir, string header, int dataBytes, long? lengthOverride = null)
    {
        var path = dir.File(Guid.NewGuid().ToString("N") + ".safetensors");
        var h = Encoding.UTF8.GetBytes(header);
        using var fs = File.Create(path);
        fs.Write(BitConverter.GetBytes(lengthOverride ?? h.Length));
        fs.Write(h);
        fs.Write(new byte[dataBytes]);
        return path;
    }

    [Theory]
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8, "past the end")]
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,12]}}", 16, "needs 16 bytes")]
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 16, "overlap")]
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,8]}}", 16, "invalid dimension")]
    [InlineData("{\"a\":{\"dtype\":\"Q4\",\"shape\":[2],\"data_offsets\":[0,8]}}", 16, "unsupported dtype")]
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 16, "invalid data_offsets")]
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,8]}}", 16, "invalid dimension")]
    [InlineData("not json", 0, "not valid JSON")]
    public void RefusesHostileHeaders(string header, int dataBytes, string expected)
    {
        using var dir = Fixtures.TempDir();
        var path = WriteRaw(dir, header, dataBytes);
        var e = Assert.Throws<InvalidFileException>(() => SafetensorsFile.Open(path));
        Assert.Contains(expected, e.Message);
        Assert.StartsWith(path, e.Message);
    }

    [Fact]
    public void RefusesAbsurdAndLyingHeaderLength()
    {
        using var dir = Fixtures.TempDir();
        var huge = WriteRaw(dir, "{}", 0, lengthOverride: 1L << 40);
        Assert.Contains("out of range", Assert.Throws<InvalidFileException>(() => SafetensorsFile.Open(huge)).Message);
        var past = WriteRaw(dir, "{}", 0, lengthOverride: 4096);
        Assert.Contains("past the end of the file", Assert.Throws<InvalidFileException>(() => SafetensorsFile.Open(past)).Message);
        var tiny = dir.File("tiny.safetensors");
        File.WriteAllBytes(tiny, new byte[3]);
        Assert.Contains("shorter than", Assert.Throws<InvalidFileException>(() => SafetensorsFile.Open(tiny)).Message);
    }

    [Fact]
    public void TruncatedFixtureIsRefused()
    {
        using var dir = Fixtures.TempDir();
        var bytes = File.ReadAllBytes(Fixtures.SdTiny("refs/unet.safetensors"));
        var path = dir.File("cut.safetensors");
        File.WriteAllBytes(path, bytes[..(bytes.Length - 100)]);
        Assert.Contains("truncated", Assert.Throws<InvalidFileException>(() => SafetensorsFile.Open(path)).Message);
    }
}
