using CudaDream.Diffusion.Images;
using CudaDream.TestSupport;
using Xunit;

namespace CudaDream.Diffusion.Tests.Images;

/// <summary>The Pillow-made images in Images/Reference (see make_references.py and manifest.json there).</summary>
internal static class ImageReferences
{
    public static string Path(string name) =>
        System.IO.Path.Combine(Fixtures.RepoRoot, "tests", "CudaDream.Diffusion.Tests", "Images", "Reference", name);

    public static RgbImage Load(string name) => ImageLoader.Load(Path(name));

    public static int MaxAbsDifference(RgbImage expected, RgbImage actual)
    {
        Assert.Equal((expected.Width, expected.Height), (actual.Width, actual.Height));
        int max = 0;
        for (int i = 0; i < expected.Rgb.Length; i++) max = Math.Max(max, Math.Abs(expected.Rgb[i] - actual.Rgb[i]));
        return max;
    }
}
