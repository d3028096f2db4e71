using System.Buffers.Binary;
using System.IO.Hashing;
using CudaDream.Diffusion.Images;
using CudaDream.Engine;
using CudaDream.TestSupport;
using SkiaSharp;
using Xunit;

namespace CudaDream.Diffusion.Tests.Images;

public class ImageLoaderTests
{
    [Fact]
    public void PixelsSurviveAPngRoundTrip()
    {
        var source = ImageReferences.Load("source_97x61.png");
        Assert.Equal((97, 61), (source.Width, source.Height));
        using var dir = Fixtures.TempDir();
        PngFile.Write(dir.File("copy.png"), source);
        Assert.Equal(source.Rgb, ImageLoader.Load(dir.File("copy.png")).Rgb);
    }

    [Fact]
    public void GrayscaleBecomesRgbAsPillowConvertsIt()
    {
        Assert.Equal(ImageReferences.Load("gray_24x16_rgb.png").Rgb, ImageReferences.Load("gray_24x16.png").Rgb);
    }

    [Theory]
    [InlineData(AlphaBackground.White, "alpha_ramp_over_white.png")]
    [InlineData(AlphaBackground.Black, "alpha_ramp_over_black.png")]
    public void TransparencyIsCompositedLikePillowsAlphaComposite(AlphaBackground background, string expected)
    {
        var image = ImageLoader.Load(ImageReferences.Path("alpha_ramp.png"), new ImageLoadOptions { Background = background });
        Assert.True(ImageReferences.MaxAbsDifference(ImageReferences.Load(expected), image) <= 1);
    }

    [Theory]
    [InlineData(1)] [InlineData(2)] [InlineData(3)] [InlineData(4)]
    [InlineData(5)] [InlineData(6)] [InlineData(7)] [InlineData(8)]
    public void ExifOrientationIsAppliedLikePillowsExifTranspose(int orientation)
    {
        var upright = ImageReferences.Load($"orientation_{orientation}_upright.png");
        var loaded = ImageReferences.Load($"orientation_{orientation}.jpg");
        // Both decoders are libjpeg-family IDCTs; allow a few levels of rounding difference, far below what a
        // wrong rotation would cost (the quadrants differ by ~200 levels).
        Assert.True(ImageReferences.MaxAbsDifference(upright, loaded) <= 4, $"orientation {orientation}");
        var stored = ImageLoader.Load(ImageReferences.Path($"orientation_{orientation}.jpg"), new ImageLoadOptions { ApplyExifOrientation = false });
        Assert.Equal((48, 32), (stored.Width, stored.Height));
    }

    [Fact]
    public void TruncatedPngIsRefused()
    {
        using var dir = Fixtures.TempDir();
        var png = File.ReadAllBytes(ImageReferences.Path("resize_lanczos_150x94.png"));
        File.WriteAllBytes(dir.File("half.png"), png[..(png.Length / 2)]);
        var e = Assert.Throws<InvalidFileException>(() => ImageLoader.Load(dir.File("half.png")));
        Assert.Equal(dir.File("half.png"), e.Path);
    }

    [Fact]
    public void TruncatedJpegIsRefused()
    {
        using var dir = Fixtures.TempDir();
        var jpg = File.ReadAllBytes(ImageReferences.Path("orientation_1.jpg"));
        File.WriteAllBytes(dir.File("cut.jpg"), jpg[..(jpg.Length * 2 / 3)]);
        Assert.Throws<InvalidFileException>(() => ImageLoader.Load(dir.File("cut.jpg")));
    }

    [Fact]
    public void RandomBytesWithAnImageNameAreRefused()
    {
        using var dir = Fixtures.TempDir();
        var bytes = new byte[4096];
        new Random(1234).NextBytes(bytes);
        File.WriteAllBytes(dir.File("photo.jpg"), bytes);
        var e = Assert.Throws<InvalidFileException>(() => ImageLoader.Load(dir.File("photo.jpg")));
        Assert.Contains("photo.jpg", e.Message);
        File.WriteAllBytes(dir.File("empty.png"), []);
        Assert.Throws<InvalidFileException>(() => ImageLoader.Load(dir.File("empty.png")));
        Assert.Throws<CudaDreamException>(() => ImageLoader.Load(dir.File("missing.png")));
    }

    /// <summary>A PNG whose header claims width×height, with one tiny IDAT: the loader must refuse it from the header.</summary>
    private static byte[] PngClaiming(int width, int height)
    {
        using var ms = new MemoryStream();
        ms.Write(PngText.Signature);
        void Chunk(string type, byte[] data)
        {
            var len = new byte[4];
            BinaryPrimitives.WriteUInt32BigEndian(len, (uint)data.Length);
            ms.Write(len);
            var td = System.Text.Encoding.ASCII.GetBytes(type).Concat(data).ToArray();
            ms.Write(td);
            var crc = new byte[4];
            BinaryPrimitives.WriteUInt32BigEndian(crc, Crc32.HashToUInt32(td));
            ms.Write(crc);
        }
        var ihdr = new byte[13];
        BinaryPrimitives.WriteUInt32BigEndian(ihdr, (uint)width);
        BinaryPrimitives.WriteUInt32BigEndian(ihdr.AsSpan(4), (uint)height);
        ihdr[8] = 8; ihdr[9] = 2; // 8-bit RGB
        Chunk("IHDR", ihdr);
        Chunk("IDAT", [0x78, 0x9C, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
        Chunk("IEND", []);
        return ms.ToArray();
    }

    [Fact]
    public void AbsurdDimensionsAreRefusedFromTheHeader()
    {
        using var dir = Fixtures.TempDir();
        File.WriteAllBytes(dir.File("huge.png"), PngClaiming(20000, 20000));
        var e = Assert.Throws<InvalidFileException>(() => ImageLoader.Load(dir.File("huge.png")));
        Assert.Contains("20000x20000", e.Message);
        File.WriteAllBytes(dir.File("wide.png"), PngClaiming(12000, 9000)); // each side allowed, 108 MP is not
        Assert.Throws<InvalidFileException>(() => ImageLoader.Load(dir.File("wide.png")));
        var small = ImageReferences.Path("source_97x61.png");
        Assert.Throws<InvalidFileException>(() => ImageLoader.Load(small, new ImageLoadOptions { MaxSide = 64 }));
    }

    [Fact]
    public void WebpAndBmpAreRead()
    {
        using var dir = Fixtures.TempDir();
        var source = ImageReferences.Load("source_97x61.png");
        using var bitmap = new SKBitmap(new SKImageInfo(97, 61, SKColorType.Rgba8888, SKAlphaType.Opaque));
        for (int y = 0; y < 61; y++)
            for (int x = 0; x < 97; x++)
            {
                var (r, g, b) = source[x, y];
                bitmap.SetPixel(x, y, new SKColor(r, g, b));
            }
        using (var webp = bitmap.PeekPixels()!.Encode(new SKWebpEncoderOptions(SKWebpEncoderCompression.Lossless, 100)))
            File.WriteAllBytes(dir.File("lossless.webp"), webp!.ToArray());
        Assert.Equal(source.Rgb, ImageLoader.Load(dir.File("lossless.webp")).Rgb);
    }
}
