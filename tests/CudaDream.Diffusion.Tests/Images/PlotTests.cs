using CudaDream.Diffusion.Images;
using CudaDream.TestSupport;
using Xunit;

namespace CudaDream.Diffusion.Tests.Images;

public class PlotTests
{
    private static RgbImage Solid(int w, int h, byte r, byte g, byte b) => RgbImage.Filled(w, h, r, g, b);

    [Fact]
    public void GridPlacesEveryImageInItsCell()
    {
        var colors = new (byte, byte, byte)[] { (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255) };
        var images = colors.Select(c => Solid(20, 10, c.Item1, c.Item2, c.Item3)).ToList();
        var grid = ImageGrid.Compose(images, columns: 3, options: new ImageGridOptions { Spacing = 2 });
        Assert.Equal((3 * 20 + 4 * 2, 2 * 10 + 3 * 2), (grid.Width, grid.Height));
        for (int k = 0; k < images.Count; k++)
        {
            int x = 2 + (k % 3) * 22, y = 2 + (k / 3) * 12;
            Assert.Equal(colors[k], grid[x, y]);
            Assert.Equal(colors[k], grid[x + 19, y + 9]);
        }
        Assert.Equal(((byte)255, (byte)255, (byte)255), grid[grid.Width - 1, grid.Height - 1]); // empty sixth cell
    }

    /// <summary>Runs where the machine has a label font; elsewhere labels are left out (the grid still comes out) and this is skipped.</summary>
    private sealed class FactWithFontAttribute : FactAttribute
    {
        public FactWithFontAttribute() { if (!LabelFont.IsAvailable) Skip = "this machine has no font for labels (grids come out without them)"; }
    }

    [FactWithFont]
    public void GridRowLabelsSitAboveTheirRows()
    {
        var images = Enumerable.Range(0, 4).Select(_ => Solid(64, 32, 0, 0, 0)).ToList();
        string longPrompt = string.Concat(Enumerable.Repeat("a very long prompt that cannot fit, ", 20));
        var grid = ImageGrid.Compose(images, 2, ["a photo of sks dog", longPrompt]);
        int labelBand = (grid.Height - 2 * 32 - 3 * 4) / 2;
        Assert.True(labelBand >= 0);
        Assert.True(labelBand > 0, "a label band above each row");
        bool inked = false;
        for (int y = 4; y < 4 + labelBand; y++)
            for (int x = 0; x < grid.Width; x++)
                inked |= grid[x, y] != ((byte)255, (byte)255, (byte)255);
        Assert.True(inked, "label text drawn above the first row");
        Assert.Equal(((byte)0, (byte)0, (byte)0), grid[4, 4 + labelBand]);
    }

    private static int CountPixels(RgbImage image, Func<(byte R, byte G, byte B), bool> predicate)
    {
        int n = 0;
        for (int y = 0; y < image.Height; y++)
            for (int x = 0; x < image.Width; x++)
                if (predicate(image[x, y])) n++;
        return n;
    }

    private static List<(int, double)> Train(int n) =>
        Enumerable.Range(0, n).Select(i => (i * 10, 0.2 + 0.8 * Math.Exp(-i / 40.0) + 0.05 * Math.Sin(i * 1.7))).ToList();

    [Fact]
    public void LossCurveDrawsBothSeries()
    {
        var eval = Enumerable.Range(0, 8).Select(i => (i * 250, 0.3 + 0.6 * Math.Exp(-i / 2.5))).ToList();
        var image = LossCurvePlot.Render(Train(200), eval);
        Assert.Equal((800, 450), (image.Width, image.Height));
        Assert.True(CountPixels(image, p => p.B > 150 && p.R < 90) > 200, "blue training curve");
        Assert.True(CountPixels(image, p => p.R > 200 && p.G is > 80 and < 140 && p.B < 60) > 50, "orange eval markers");
    }

    [Fact]
    public void LossCurveToleratesLogScaleZerosNaNsAndEmptyInput()
    {
        var train = Train(50);
        train[3] = (30, 0);
        train[4] = (40, double.NaN);
        train[5] = (50, double.PositiveInfinity);
        Assert.NotNull(LossCurvePlot.Render(train, null, new LossCurveOptions { LogY = true }));
        Assert.NotNull(LossCurvePlot.Render([], []));
        Assert.NotNull(LossCurvePlot.Render([(5, 1.0)], [(5, 2.0)]));
    }

    [Fact]
    public void LossCurveIsWrittenAsPng()
    {
        using var dir = Fixtures.TempDir();
        var path = dir.File("loss.png");
        LossCurvePlot.Write(path, Train(100), [(0, 1.0), (500, 0.5), (990, 0.4)], new LossCurveOptions { Width = 400, Height = 240 });
        var back = ImageLoader.Load(path);
        Assert.Equal((400, 240), (back.Width, back.Height));
    }
}
