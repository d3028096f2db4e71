using CudaDream.Diffusion.Images;

namespace CudaDream.Diffusion.Pretraining;

/// <summary>What <see cref="SceneJudge"/> read from an image.</summary>
public sealed record SceneReading(SceneColour Background, SceneColour? Shape, double ShapeFraction, bool Matches);

/// <summary>
/// A simple pixel test of whether an image shows its caption: the background colour is the palette colour nearest to the
/// median of the image's border (2 px), the shape's colour the palette colour nearest to the mean of the pixels that differ
/// clearly from that background (over 35 in RGB, half the closest two palette colours' distance); the image matches when both are the named ones and the shape
/// covers 4–70 % of it. It reads colours and regions only, not the outline of the shape.
/// </summary>
public static class SceneJudge
{
    public static SceneReading Read(RgbImage image, SceneColour colour, SceneColour background)
    {
        int w = image.Width, h = image.Height, border = Math.Max(1, Math.Min(w, h) / 32);
        var rs = new List<byte>(); var gs = new List<byte>(); var bs = new List<byte>();
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                if (x < border || y < border || x >= w - border || y >= h - border)
                {
                    var (r, g, b) = image[x, y];
                    rs.Add(r); gs.Add(g); bs.Add(b);
                }
        static byte Median(List<byte> v) { v.Sort(); return v[v.Count / 2]; }
        var bg = (R: (int)Median(rs), G: (int)Median(gs), B: (int)Median(bs));
        double sr = 0, sg = 0, sb = 0;
        int count = 0;
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
            {
                var (r, g, b) = image[x, y];
                if (Distance(r, g, b, bg.R, bg.G, bg.B) <= 35) continue;
                sr += r; sg += g; sb += b; count++;
            }
        var readBackground = Nearest(bg.R, bg.G, bg.B);
        double fraction = (double)count / (w * h);
        SceneColour? readShape = count == 0 ? null : Nearest((int)(sr / count), (int)(sg / count), (int)(sb / count));
        bool matches = readBackground == background && readShape == colour && fraction is >= 0.04 and <= 0.70;
        return new SceneReading(readBackground, readShape, fraction, matches);
    }

    /// <summary>
    /// Fraction of outline-dark pixels in the region shapes occupy (the image less a border of 1/8 of its side, where no
    /// shape or outline of a scene reaches): every channel below 110, which no palette colour is (the darkest, purple,
    /// reaches 190), so a blurred outline still counts.
    /// </summary>
    public static double DarkFraction(RgbImage image)
    {
        int mx = image.Width / 8, my = image.Height / 8, dark = 0, total = 0;
        for (int y = my; y < image.Height - my; y++)
            for (int x = mx; x < image.Width - mx; x++)
            {
                var (r, g, b) = image[x, y];
                total++;
                if (r < 110 && g < 110 && b < 110) dark++;
            }
        return (double)dark / total;
    }

    private static double Distance(int r, int g, int b, int r2, int g2, int b2) =>
        Math.Sqrt((r - r2) * (r - r2) + (g - g2) * (g - g2) + (b - b2) * (b - b2));

    private static SceneColour Nearest(int r, int g, int b) =>
        ShapeScenes.Palette.MinBy(c => Distance(r, g, b, c.R, c.G, c.B))!;
}
