using CudaDream.Engine;
using SkiaSharp;

namespace CudaDream.Diffusion.Images;

/// <summary>What shows through transparent pixels once an image is flattened to RGB.</summary>
public enum AlphaBackground
{
    /// <summary>The default: cut-out subjects (product shots, stickers) are usually meant to sit on white.</summary>
    White,
    Black,
}

/// <summary>Limits and choices of <see cref="ImageLoader.Load"/>.</summary>
public sealed record ImageLoadOptions
{
    public int MaxSide { get; init; } = 16384;
    public long MaxPixels { get; init; } = 100_000_000;
    public long MaxFileBytes { get; init; } = 256L << 20;
    public AlphaBackground Background { get; init; } = AlphaBackground.White;
    /// <summary>Rotate/flip as the EXIF Orientation tag says, so the image is upright as viewers show it.</summary>
    public bool ApplyExifOrientation { get; init; } = true;
}

/// <summary>
/// Decodes training and reference images (JPEG, PNG, WebP, BMP, GIF first frame) with SkiaSharp's codecs,
/// safely: the header is read and the dimensions checked before any pixel buffer is allocated, and a
/// truncated or corrupt stream is an error rather than a half-grey image. The result is upright (EXIF
/// orientation applied) 8-bit RGB with transparency composited over a solid background.
/// </summary>
public static class ImageLoader
{
    private static readonly HashSet<SKEncodedImageFormat> Supported =
        [SKEncodedImageFormat.Jpeg, SKEncodedImageFormat.Png, SKEncodedImageFormat.Webp, SKEncodedImageFormat.Bmp, SKEncodedImageFormat.Gif];

    public static readonly string[] Extensions = [".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"];

    public static RgbImage Load(string path, ImageLoadOptions? options = null)
    {
        options ??= new ImageLoadOptions();
        var bytes = ReadBounded(path, options.MaxFileBytes);
        using var data = SKData.CreateCopy(bytes);
        using var codec = SKCodec.Create(data)
            ?? throw new InvalidFileException(path, "not a readable image (expected JPEG, PNG, WebP, BMP or GIF)");
        if (!Supported.Contains(codec.EncodedFormat))
            throw new InvalidFileException(path, $"{codec.EncodedFormat} images are not supported (expected JPEG, PNG, WebP, BMP or GIF)");

        int width = codec.Info.Width, height = codec.Info.Height;
        if (width <= 0 || height <= 0 || width > options.MaxSide || height > options.MaxSide || (long)width * height > options.MaxPixels)
            throw new InvalidFileException(path, $"image of {width}x{height} pixels is outside the limits ({options.MaxSide} px a side, {options.MaxPixels / 1_000_000} megapixels)");

        var info = new SKImageInfo(width, height, SKColorType.Rgba8888, SKAlphaType.Unpremul);
        var rgba = new byte[info.BytesSize64];
        var result = codec.GetPixels(info, rgba);
        if (result != SKCodecResult.Success)
            throw new InvalidFileException(path, result == SKCodecResult.IncompleteInput
                ? "truncated image data"
                : $"corrupt image data ({result})");

        var rgb = Flatten(rgba, options.Background);
        var image = new RgbImage(width, height, rgb);
        return options.ApplyExifOrientation ? Orientation.Apply(image, codec.EncodedOrigin) : image;
    }

    /// <summary>
    /// The alpha channel of an image as a grey image (R = G = B = alpha), upright like <see cref="Load"/>; null when the
    /// image has no transparency (no alpha channel, or every pixel opaque).
    /// </summary>
    public static RgbImage? LoadAlpha(string path, ImageLoadOptions? options = null)
    {
        options ??= new ImageLoadOptions();
        var bytes = ReadBounded(path, options.MaxFileBytes);
        using var data = SKData.CreateCopy(bytes);
        using var codec = SKCodec.Create(data) ?? throw new InvalidFileException(path, "not a readable image (expected JPEG, PNG, WebP, BMP or GIF)");
        if (codec.Info.AlphaType == SKAlphaType.Opaque) return null;
        int width = codec.Info.Width, height = codec.Info.Height;
        if (width <= 0 || height <= 0 || width > options.MaxSide || height > options.MaxSide || (long)width * height > options.MaxPixels)
            throw new InvalidFileException(path, $"image of {width}x{height} pixels is outside the limits ({options.MaxSide} px a side, {options.MaxPixels / 1_000_000} megapixels)");
        var info = new SKImageInfo(width, height, SKColorType.Rgba8888, SKAlphaType.Unpremul);
        var rgba = new byte[info.BytesSize64];
        var result = codec.GetPixels(info, rgba);
        if (result != SKCodecResult.Success) throw new InvalidFileException(path, result == SKCodecResult.IncompleteInput ? "truncated image data" : $"corrupt image data ({result})");
        var grey = new byte[width * height * 3];
        bool transparent = false;
        for (int p = 0, q = 3; q < rgba.Length; p += 3, q += 4)
        {
            byte a = rgba[q];
            transparent |= a != 255;
            grey[p] = grey[p + 1] = grey[p + 2] = a;
        }
        if (!transparent) return null;
        var image = new RgbImage(width, height, grey);
        return options.ApplyExifOrientation ? Orientation.Apply(image, codec.EncodedOrigin) : image;
    }

    private static byte[] ReadBounded(string path, long maxBytes)
    {
        try
        {
            using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
            if (fs.Length > maxBytes)
                throw new InvalidFileException(path, $"{fs.Length} bytes, more than the {maxBytes >> 20} MiB an image may have");
            if (fs.Length == 0) throw new InvalidFileException(path, "empty file");
            var bytes = new byte[fs.Length];
            fs.ReadExactly(bytes);
            return bytes;
        }
        catch (FileNotFoundException) { throw new CudaDreamException($"{path}: file not found"); }
        catch (DirectoryNotFoundException) { throw new CudaDreamException($"{path}: file not found"); }
        catch (UnauthorizedAccessException e) { throw new InvalidFileException(path, $"cannot be read ({e.Message})"); }
        catch (IOException e) when (e is not EndOfStreamException) { throw new InvalidFileException(path, $"cannot be read ({e.Message})"); }
    }

    /// <summary>Composites unpremultiplied RGBA over a solid background: out = c·a + bg·(1 − a), rounded.</summary>
    private static byte[] Flatten(byte[] rgba, AlphaBackground background)
    {
        int bg = background == AlphaBackground.White ? 255 : 0;
        var rgb = new byte[rgba.Length / 4 * 3];
        for (int p = 0, q = 0; q < rgba.Length; p += 3, q += 4)
        {
            int a = rgba[q + 3];
            for (int c = 0; c < 3; c++)
                rgb[p + c] = a == 255 ? rgba[q + c] : (byte)((rgba[q + c] * a + bg * (255 - a) + 127) / 255);
        }
        return rgb;
    }
}
