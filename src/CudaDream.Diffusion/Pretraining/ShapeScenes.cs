using CudaDream.Diffusion.Images;
using CudaDream.Engine.Randomness;

namespace CudaDream.Diffusion.Pretraining;

public enum SceneShape { Circle, Square, Triangle, Diamond }

/// <summary>A named colour of the scenes' palette.</summary>
public sealed record SceneColour(string Name, byte R, byte G, byte B);

/// <summary>
/// One procedural scene: a shape of one colour on a plain background of another, at a size and position. Its caption
/// names the colour, the shape and the background ("a red circle on a blue background").
/// </summary>
public sealed record Scene(SceneShape Shape, SceneColour Colour, SceneColour Background, float CenterX, float CenterY, float Radius)
{
    public string Caption => $"{ShapeScenes.Article(Colour.Name)} {Colour.Name} {ShapeScenes.Name(Shape)} on {ShapeScenes.Article(Background.Name)} {Background.Name} background";
}

/// <summary>The look a scene is drawn in: the plain flat look the tiny model learns, or the style concept's.</summary>
public enum SceneStyle
{
    /// <summary>Flat colour, anti-aliased edge.</summary>
    Flat,
    /// <summary>The style concept of the quick start: soft radial shading toward a highlight and a bold dark outline.</summary>
    Toon,
}

/// <summary>
/// The captioned image set the tiny model is pretrained on, generated from a seed instead of stored: shapes × colours ×
/// backgrounds × sizes × positions, drawn with 4×4 supersampling. Scene i of a seed is the same on every machine
/// (counter-based draws keyed by (seed, i)).
/// </summary>
public static class ShapeScenes
{
    public static readonly IReadOnlyList<SceneColour> Palette =
    [
        new("red", 220, 40, 40), new("green", 40, 170, 60), new("blue", 40, 80, 220), new("yellow", 240, 210, 40),
        new("purple", 140, 60, 190), new("orange", 245, 140, 30), new("white", 240, 240, 240),
    ];

    public static readonly IReadOnlyList<SceneShape> Shapes = Enum.GetValues<SceneShape>();

    /// <summary>The outline colour of <see cref="SceneStyle.Toon"/>: darker than anything in the palette.</summary>
    public static readonly SceneColour Outline = new("outline", 28, 22, 34);

    public static string Name(SceneShape s) => s.ToString().ToLowerInvariant();

    /// <summary>"an" before a vowel ("an orange circle"), else "a".</summary>
    public static string Article(string word) => "aeiou".Contains(word[0]) ? "an" : "a";

    /// <summary>Every word the captions use (for the tokenizer's vocabulary).</summary>
    public static IEnumerable<string> CaptionWords() =>
        new[] { "a", "an", "on", "background" }.Concat(Palette.Select(c => c.Name)).Concat(Shapes.Select(Name));

    /// <summary>Scene <paramref name="index"/> of <paramref name="seed"/>, for an image of <paramref name="size"/> pixels.</summary>
    public static Scene Draw(ulong seed, long index, int size)
    {
        Span<float> u = stackalloc float[6];
        for (int k = 0; k < u.Length; k++) u[k] = CounterRng.Uniform(seed, index, RandomPurpose.PretrainScenes, k);
        var shape = Shapes[Math.Min(Shapes.Count - 1, (int)(u[0] * Shapes.Count))];
        int colour = Math.Min(Palette.Count - 1, (int)(u[1] * Palette.Count));
        int background = (colour + 1 + Math.Min(Palette.Count - 2, (int)(u[2] * (Palette.Count - 1)))) % Palette.Count;
        float radius = size * (0.2f + 0.1f * u[3]);
        float jitter = size * 0.1f;
        return new Scene(shape, Palette[colour], Palette[background], size / 2f + jitter * (2 * u[4] - 1), size / 2f + jitter * (2 * u[5] - 1), radius);
    }

    /// <summary>Signed distance-like coverage test: ≤ 0 inside the shape (in units of the radius), > 0 outside.</summary>
    private static float Inside(SceneShape shape, float dx, float dy)
    {
        switch (shape)
        {
            case SceneShape.Circle: return MathF.Sqrt(dx * dx + dy * dy) - 1f;
            case SceneShape.Square: return MathF.Max(MathF.Abs(dx), MathF.Abs(dy)) - 0.85f;
            case SceneShape.Diamond: return MathF.Abs(dx) + MathF.Abs(dy) - 1.1f;
            default:
                // Upright equilateral-ish triangle: apex at the top, base at the bottom.
                float edge = MathF.Max(dy - 0.8f, MathF.Max(-0.866f * dx - 0.5f * dy - 0.5f, 0.866f * dx - 0.5f * dy - 0.5f) * 1.15f);
                return edge;
        }
    }

    public static RgbImage Render(Scene s, int size, SceneStyle style = SceneStyle.Flat)
    {
        var rgb = new byte[size * size * 3];
        const int ss = 4; // supersamples per axis
        float outlineWidth = style == SceneStyle.Toon ? 3.2f / s.Radius : 0f; // about 3 px, in radius units
        for (int y = 0; y < size; y++)
            for (int x = 0; x < size; x++)
            {
                float r = 0, g = 0, b = 0;
                for (int sy = 0; sy < ss; sy++)
                    for (int sx = 0; sx < ss; sx++)
                    {
                        float px = x + (sx + 0.5f) / ss, py = y + (sy + 0.5f) / ss;
                        float dx = (px - s.CenterX) / s.Radius, dy = (py - s.CenterY) / s.Radius;
                        float d = Inside(s.Shape, dx, dy);
                        (float R, float G, float B) c;
                        if (d > outlineWidth) c = (s.Background.R, s.Background.G, s.Background.B);
                        else if (d > 0) c = (Outline.R, Outline.G, Outline.B);
                        else if (style == SceneStyle.Toon)
                        {
                            // Soft radial shading: brighter toward a highlight up and to the left, darker toward the rim.
                            float hx = dx + 0.35f, hy = dy + 0.35f;
                            float shade = Math.Clamp(1.25f - 0.45f * MathF.Sqrt(hx * hx + hy * hy), 0.55f, 1.25f);
                            c = (Math.Min(255, s.Colour.R * shade), Math.Min(255, s.Colour.G * shade), Math.Min(255, s.Colour.B * shade));
                        }
                        else c = (s.Colour.R, s.Colour.G, s.Colour.B);
                        r += c.R; g += c.G; b += c.B;
                    }
                int o = (y * size + x) * 3;
                rgb[o] = (byte)MathF.Round(r / (ss * ss));
                rgb[o + 1] = (byte)MathF.Round(g / (ss * ss));
                rgb[o + 2] = (byte)MathF.Round(b / (ss * ss));
            }
        return new RgbImage(size, size, rgb);
    }

    /// <summary>True where pixel (x, y) of a scene is well inside the shape (0.6 of its radius), the region a pixel test reads.</summary>
    public static bool Core(Scene s, float x, float y) => Inside(s.Shape, (x - s.CenterX) / s.Radius, (y - s.CenterY) / s.Radius) < -0.4f;
}
