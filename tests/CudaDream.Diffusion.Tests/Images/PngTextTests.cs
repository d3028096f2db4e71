using System.Buffers.Binary;
using System.Text;
using CudaDream.Diffusion.Images;
using CudaDream.Engine;
using CudaDream.TestSupport;
using Xunit;

namespace CudaDream.Diffusion.Tests.Images;

public class PngTextTests
{
    /// <summary>CRC-32 (ISO 3309 / PNG spec Annex D), bit by bit: independent of System.IO.Hashing.</summary>
    private static uint BitwiseCrc32(ReadOnlySpan<byte> bytes)
    {
        uint crc = 0xFFFFFFFF;
        foreach (var b in bytes)
        {
            crc ^= b;
            for (int k = 0; k < 8; k++) crc = (crc & 1) != 0 ? 0xEDB88320 ^ (crc >> 1) : crc >> 1;
        }
        return ~crc;
    }

    private sealed record Chunk(string Type, byte[] Data, uint Crc);

    private static List<Chunk> Chunks(byte[] png)
    {
        var chunks = new List<Chunk>();
        for (int at = 8; at < png.Length;)
        {
            int length = (int)BinaryPrimitives.ReadUInt32BigEndian(png.AsSpan(at));
            var type = Encoding.ASCII.GetString(png, at + 4, 4);
            chunks.Add(new Chunk(type, png[(at + 8)..(at + 8 + length)], BinaryPrimitives.ReadUInt32BigEndian(png.AsSpan(at + 8 + length))));
            at += 12 + length;
        }
        return chunks;
    }

    private static readonly GenerationParameters Sample = new()
    {
        Prompt = "a photo of sks dog",
        NegativePrompt = "blurry, low quality",
        Steps = 25,
        Sampler = "DDIM",
        CfgScale = 7.5,
        Seed = 1,
        Width = 512,
        Height = 512,
        ModelHash = "6ce0161689",
        Model = "v1-5-pruned-emaonly",
    };

    [Fact]
    public void InfotextFollowsAutomatic1111()
    {
        Assert.Equal(
            "a photo of sks dog\nNegative prompt: blurry, low quality\n" +
            "Steps: 25, Sampler: DDIM, CFG scale: 7.5, Seed: 1, Size: 512x512, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly",
            Sample.ToInfotext());
        var quoted = Sample with { NegativePrompt = null, CfgScale = 7, ModelHash = null, Model = "my: model", Extra = [new("Lora hashes", "sks: 0123abcd")] };
        Assert.Equal("a photo of sks dog\nSteps: 25, Sampler: DDIM, CFG scale: 7, Seed: 1, Size: 512x512, Model: \"my: model\", Lora hashes: \"sks: 0123abcd\"",
            quoted.ToInfotext());
    }

    [Fact]
    public void ParametersGoIntoATextChunkRightAfterIhdrWithAValidCrc()
    {
        using var dir = Fixtures.TempDir();
        var image = ImageReferences.Load("source_97x61.png");
        var path = dir.File("sample.png");
        PngFile.Write(path, image, Sample);

        var chunks = Chunks(File.ReadAllBytes(path));
        Assert.Equal("IHDR", chunks[0].Type);
        Assert.Equal("tEXt", chunks[1].Type);
        Assert.Equal("IEND", chunks[^1].Type);
        foreach (var chunk in chunks)
            Assert.Equal(BitwiseCrc32([.. Encoding.ASCII.GetBytes(chunk.Type), .. chunk.Data]), chunk.Crc);
        Assert.Equal("parameters\0" + Sample.ToInfotext(), Encoding.Latin1.GetString(chunks[1].Data));

        Assert.Equal(Sample.ToInfotext(), PngText.Read(path)["parameters"]);
        Assert.Equal(image.Rgb, ImageLoader.Load(path).Rgb);
        Assert.Single(Directory.GetFiles(dir.FullName)); // written atomically: no temporary file left
    }

    [Fact]
    public void TextLatin1CannotHoldGoesIntoUtf8Itxt()
    {
        using var dir = Fixtures.TempDir();
        var path = dir.File("cjk.png");
        var parameters = Sample with { Prompt = "日本の猫, café" };
        PngFile.Write(path, RgbImage.Filled(8, 8, 10, 20, 30), parameters);
        var chunks = Chunks(File.ReadAllBytes(path));
        Assert.Equal("iTXt", chunks[1].Type);
        Assert.Equal(BitwiseCrc32([.. "iTXt"u8.ToArray(), .. chunks[1].Data]), chunks[1].Crc);
        Assert.Equal(parameters.ToInfotext(), PngText.Read(path)["parameters"]);

        PngFile.Write(path, RgbImage.Filled(8, 8, 10, 20, 30), [new("Comment", "naïve café")]);
        Assert.Equal("tEXt", Chunks(File.ReadAllBytes(path))[1].Type);
        Assert.Equal("naïve café", PngText.Read(path)["Comment"]);
    }

    [Fact]
    public void ReaderRefusesCorruptTextChunks()
    {
        using var dir = Fixtures.TempDir();
        var png = PngFile.Encode(RgbImage.Filled(4, 4, 1, 2, 3), [new("parameters", "x")]);
        int textAt = 8 + 25; // signature + IHDR chunk
        var badCrc = (byte[])png.Clone();
        badCrc[textAt + 8] ^= 0x20; // flip a bit of the keyword
        File.WriteAllBytes(dir.File("crc.png"), badCrc);
        Assert.Contains("CRC", Assert.Throws<InvalidFileException>(() => PngText.Read(dir.File("crc.png"))).Message);

        var badLength = (byte[])png.Clone();
        BinaryPrimitives.WriteUInt32BigEndian(badLength.AsSpan(textAt), 0x7FFFFFF0);
        File.WriteAllBytes(dir.File("length.png"), badLength);
        Assert.Throws<InvalidFileException>(() => PngText.Read(dir.File("length.png")));

        File.WriteAllBytes(dir.File("cut.png"), png[..(textAt + 4)]);
        Assert.Throws<InvalidFileException>(() => PngText.Read(dir.File("cut.png")));
        File.WriteAllBytes(dir.File("not.png"), "GIF89a.."u8.ToArray());
        Assert.Throws<InvalidFileException>(() => PngText.Read(dir.File("not.png")));
    }
}
