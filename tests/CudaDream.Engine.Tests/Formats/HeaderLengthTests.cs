using CudaDream.Engine;
using CudaDream.Engine.Formats;
using CudaDream.TestSupport;
using Xunit;

namespace CudaDream.Engine.Tests.Formats;

/// <summary>[R1] The safetensors header length is an unsigned u64: a hostile one is reported as the number the file holds, never negative.</summary>
public class HeaderLengthTests
{
    [Theory]
    [InlineData(0xFFFFFFFFFFFFFFFFUL)]
    [InlineData(0x8000000000000000UL)]
    [InlineData(100_000_001UL)]
    public void Huge_header_lengths_are_printed_unsigned(ulong declared)
    {
        using var dir = Fixtures.TempDir();
        var path = dir.File("bad.safetensors");
        File.WriteAllBytes(path, [.. BitConverter.GetBytes(declared), .. "{}      "u8.ToArray()]);
        var e = Assert.Throws<InvalidFileException>(() => SafetensorsFile.Open(path));
        Assert.Contains($"header length {declared} is out of range", e.Message);
        Assert.DoesNotContain("length -", e.Message);
    }
}
