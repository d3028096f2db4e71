using SkiaSharp;

namespace CudaDream.Diffusion.Images;

/// <summary>Layout of <see cref="ImageGrid.Compose"/>.</summary>
public sealed record ImageGridOptions
{
    public int Spacing { get; init; } = 4;
    public float LabelTextSize { get; init; } = 16;
    public SKColor Background { get; init; } = SKColors.White;
    public SKColor LabelColor { get; init; } = new(30, 30, 30);
}

/// <summary>
/// Images in rows × columns, cells as large as the largest image (smaller ones centred), with an optional
/// label above each row (e.g. the prompt, cut with "…" to the grid's width). Labels are skipped when the
/// machine has no usable font.
/// </summary>
public static class ImageGrid
{
    /// <summary>The image <paramref name="factor"/> times larger, each pixel a factor×factor block (nearest neighbour: no invented detail).</summary>
    public static RgbImage Enlarge(RgbImage image, int factor)
    {
        if (factor <= 1) return image;
        int w = image.Width * factor, h = image.Height * factor;
        var rgb = new byte[checked(w * h * 3)];
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
            {
                int src = ((y / factor) * image.Width + x / factor) * 3, dst = (y * w + x) * 3;
                rgb[dst] = image.Rgb[src]; rgb[dst + 1] = image.Rgb[src + 1]; rgb[dst + 2] = image.Rgb[src + 2];
            }
        return new RgbImage(w, h, rgb);
    }

    public static RgbImage Compose(IReadOnlyList<RgbImage> images, int columns, IReadOnlyList<string>? rowLabels = null, ImageGridOptions? options = null)
    {
        if (images.Count == 0) throw new ArgumentException("a grid needs at least one image", nameof(images));
        if (columns <= 0) throw new ArgumentOutOfRangeException(nameof(columns));
        options ??= new ImageGridOptions();
        columns = Math.Min(columns, images.Count);
        int rows = (images.Count + columns - 1) / columns;
        int cellW = images.Max(i => i.Width), cellH = images.Max(i => i.Height);
        int gap = options.Spacing;

        using var font = rowLabels is { Count: > 0 } ? LabelFont.Create(options.LabelTextSize) : null;
        int width = checked(columns * cellW + (columns + 1) * gap);
        // Labels wrap onto as many lines as they need (up to three), so a long prompt is read whole over a narrow grid.
        var lines = Enumerable.Range(0, rows).Select(r => font != null && r < rowLabels!.Count && !string.IsNullOrEmpty(rowLabels[r])
            ? LabelFont.Wrap(font, rowLabels[r], width - 2 * gap) : (IReadOnlyList<string>)Array.Empty<string>()).ToList();
        int lineH = font == null ? 0 : (int)Math.Ceiling(font.Spacing);
        int LabelHeight(int r) => font == null ? 0 : Math.Max(1, lines[r].Count) * lineH + gap;
        int height = checked(Enumerable.Range(0, rows).Sum(r => cellH + LabelHeight(r)) + (rows + 1) * gap);

        using var bitmap = new SKBitmap(new SKImageInfo(width, height, SKColorType.Rgba8888, SKAlphaType.Premul));
        using var canvas = new SKCanvas(bitmap);
        canvas.Clear(options.Background);
        using var textPaint = new SKPaint { Color = options.LabelColor, IsAntialias = true };
        int top = gap;
        for (int r = 0; r < rows; r++)
        {
            for (int k = 0; k < lines[r].Count; k++)
                canvas.DrawText(lines[r][k], gap, top + k * lineH - font!.Metrics.Ascent, SKTextAlign.Left, font, textPaint);
            int labelH = LabelHeight(r);
            for (int c = 0; c < columns && r * columns + c < images.Count; c++)
            {
                var image = images[r * columns + c];
                using var cell = image.ToBitmap();
                int x = gap + c * (cellW + gap) + (cellW - image.Width) / 2; // whole pixels: no resampling
                int y = top + labelH + (cellH - image.Height) / 2;
                canvas.DrawBitmap(cell, x, y);
            }
            top += cellH + labelH + gap;
        }
        canvas.Flush();
        return RgbImage.FromOpaqueBitmap(bitmap);
    }
}
