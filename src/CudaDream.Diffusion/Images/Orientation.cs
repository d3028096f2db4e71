using SkiaSharp;

namespace CudaDream.Diffusion.Images;

/// <summary>
/// EXIF orientation (TIFF tag 0x0112): how the stored pixels must be mirrored/rotated to stand upright.
/// Each case maps an output pixel (x, y) back to the stored pixel it shows; 5–8 swap width and height.
/// </summary>
public static class Orientation
{
    public static RgbImage Apply(RgbImage stored, SKEncodedOrigin origin)
    {
        int w = stored.Width, h = stored.Height;
        Func<int, int, (int, int)>? source = origin switch
        {
            SKEncodedOrigin.TopRight => (x, y) => (w - 1 - x, y),              // 2: mirrored horizontally
            SKEncodedOrigin.BottomRight => (x, y) => (w - 1 - x, h - 1 - y),   // 3: rotated 180°
            SKEncodedOrigin.BottomLeft => (x, y) => (x, h - 1 - y),            // 4: mirrored vertically
            SKEncodedOrigin.LeftTop => (x, y) => (y, x),                       // 5: transposed
            SKEncodedOrigin.RightTop => (x, y) => (y, h - 1 - x),              // 6: needs 90° clockwise
            SKEncodedOrigin.RightBottom => (x, y) => (w - 1 - y, h - 1 - x),   // 7: transversed
            SKEncodedOrigin.LeftBottom => (x, y) => (w - 1 - y, x),            // 8: needs 90° counter-clockwise
            _ => null,
        };
        if (source == null) return stored;
        bool swap = origin is SKEncodedOrigin.LeftTop or SKEncodedOrigin.RightTop or SKEncodedOrigin.RightBottom or SKEncodedOrigin.LeftBottom;
        int ow = swap ? h : w, oh = swap ? w : h;
        var rgb = new byte[stored.Rgb.Length];
        for (int y = 0; y < oh; y++)
            for (int x = 0; x < ow; x++)
            {
                var (sx, sy) = source(x, y);
                Buffer.BlockCopy(stored.Rgb, 3 * (sy * w + sx), rgb, 3 * (y * ow + x), 3);
            }
        return new RgbImage(ow, oh, rgb);
    }
}
