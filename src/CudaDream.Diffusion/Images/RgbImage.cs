using SkiaSharp;

namespace CudaDream.Diffusion.Images;

/// <summary>An 8-bit sRGB image without alpha: rows top to bottom, 3 bytes (R, G, B) per pixel.</summary>
public sealed class RgbImage
{
    public int Width { get; }
    public int Height { get; }
    public byte[] Rgb { get; }

    public RgbImage(int width, int height, byte[] rgb)
    {
        if (width <= 0 || height <= 0) throw new ArgumentOutOfRangeException(nameof(width), $"image size {width}x{height}");
        if (rgb.LongLength != 3L * width * height) throw new ArgumentException($"{width}x{height} RGB needs {3L * width * height} bytes, got {rgb.LongLength}");
        Width = width;
        Height = height;
        Rgb = rgb;
    }

    public static RgbImage Filled(int width, int height, byte r, byte g, byte b)
    {
        var data = new byte[checked(3 * width * height)];
        for (int i = 0; i < data.Length; i += 3) { data[i] = r; data[i + 1] = g; data[i + 2] = b; }
        return new RgbImage(width, height, data);
    }

    public (byte R, byte G, byte B) this[int x, int y]
    {
        get
        {
            int i = 3 * (y * Width + x);
            return (Rgb[i], Rgb[i + 1], Rgb[i + 2]);
        }
    }

    /// <summary>An opaque RGBA bitmap holding this image, for SkiaSharp drawing and encoding.</summary>
    internal SKBitmap ToBitmap()
    {
        var bitmap = new SKBitmap(new SKImageInfo(Width, Height, SKColorType.Rgba8888, SKAlphaType.Opaque));
        var dst = bitmap.GetPixelSpan();
        for (int p = 0, q = 0; p < Rgb.Length; p += 3, q += 4)
        {
            dst[q] = Rgb[p];
            dst[q + 1] = Rgb[p + 1];
            dst[q + 2] = Rgb[p + 2];
            dst[q + 3] = 255;
        }
        return bitmap;
    }

    /// <summary>Reads an RGBA8888 bitmap drawn opaque (its alpha is ignored).</summary>
    internal static RgbImage FromOpaqueBitmap(SKBitmap bitmap)
    {
        if (bitmap.ColorType != SKColorType.Rgba8888) throw new ArgumentException($"expected Rgba8888, got {bitmap.ColorType}");
        var src = bitmap.GetPixelSpan();
        var rgb = new byte[3 * bitmap.Width * bitmap.Height];
        for (int p = 0, q = 0; p < rgb.Length; p += 3, q += 4)
        {
            rgb[p] = src[q];
            rgb[p + 1] = src[q + 1];
            rgb[p + 2] = src[q + 2];
        }
        return new RgbImage(bitmap.Width, bitmap.Height, rgb);
    }
}
