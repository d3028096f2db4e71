using CudaDream.Engine.Formats;
using SkiaSharp;

namespace CudaDream.Diffusion.Images;

/// <summary>PNG output: SkiaSharp encodes the pixels, <see cref="PngText"/> adds the text chunks, the file is written atomically.</summary>
public static class PngFile
{
    public static byte[] Encode(RgbImage image, IEnumerable<KeyValuePair<string, string>>? text = null)
    {
        using var bitmap = image.ToBitmap();
        using var pixmap = bitmap.PeekPixels();
        using var data = pixmap.Encode(new SKPngEncoderOptions(SKPngEncoderFilterFlags.AllFilters, zLibLevel: 6))
            ?? throw new InvalidOperationException("SkiaSharp could not encode the PNG");
        var png = data.ToArray();
        return text == null ? png : PngText.Insert(png, text);
    }

    public static void Write(string path, RgbImage image, IEnumerable<KeyValuePair<string, string>>? text = null) =>
        AtomicFile.WriteAllBytes(path, Encode(image, text));

    /// <summary>Writes the image with AUTOMATIC1111's "parameters" text, so its PNG Info tab (and other
    /// readers of that convention) show how it was made.</summary>
    public static void Write(string path, RgbImage image, GenerationParameters parameters) =>
        Write(path, image, [new KeyValuePair<string, string>("parameters", parameters.ToInfotext())]);
}
