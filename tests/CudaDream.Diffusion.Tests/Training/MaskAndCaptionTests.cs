using CudaDream.Diffusion.Images;
using CudaDream.Diffusion.Models;
using CudaDream.Diffusion.Training;
using CudaDream.TestSupport;
using SkiaSharp;
using Xunit;

namespace CudaDream.Diffusion.Tests.Training;

/// <summary>Loss masks on the latent grid (mask image and alpha channel), their file rules, and kohya's caption augmentations.</summary>
public class MaskAndCaptionTests
{
    private static RgbImage Halves(int width, int height, byte left, byte right)
    {
        var rgb = new byte[3 * width * height];
        for (int y = 0; y < height; y++)
            for (int x = 0; x < width; x++)
                rgb[3 * (y * width + x)] = rgb[3 * (y * width + x) + 1] = rgb[3 * (y * width + x) + 2] = x < width / 2 ? left : right;
        return new RgbImage(width, height, rgb);
    }

    private static void WriteRgba(string path, int width, int height, Func<int, int, byte> alpha)
    {
        using var bitmap = new SKBitmap(new SKImageInfo(width, height, SKColorType.Rgba8888, SKAlphaType.Unpremul));
        for (int y = 0; y < height; y++)
            for (int x = 0; x < width; x++) bitmap.SetPixel(x, y, new SKColor((byte)(x * 3), (byte)(y * 3), 90, alpha(x, y)));
        using var data = bitmap.Encode(SKEncodedImageFormat.Png, 100);
        File.WriteAllBytes(path, data.ToArray());
    }

    [Fact]
    public void Masks_reach_the_latent_grid_as_area_averages_and_are_not_training_images()
    {
        using var dir = Fixtures.TempDir();
        var images = dir.File("images");
        Directory.CreateDirectory(images);
        PngFile.Write(Path.Combine(images, "a.png"), Halves(64, 64, 200, 40));
        PngFile.Write(Path.Combine(images, "a.mask.png"), Halves(64, 64, 255, 0));
        // Alpha: opaque left half, transparent right half, and one 8×8 block half transparent (0.5 on the grid).
        WriteRgba(Path.Combine(images, "b.png"), 64, 64, (x, y) => (byte)(x < 32 ? (x < 8 && y < 8 && x % 2 == 1 ? 0 : 255) : 0));
        PngFile.Write(Path.Combine(images, "c.png"), Halves(64, 64, 10, 20));

        var listed = TrainingData.ListSized(images, _ => { }).Select(f => Path.GetFileName(f.Path)).ToList();
        Assert.Equal(new[] { "a.png", "b.png", "c.png" }, listed);
        Assert.Equal(new MaskSource(Path.Combine(images, "a.mask.png"), false), TrainingData.FindMask(Path.Combine(images, "a.png")));
        Assert.Equal(new MaskSource(Path.Combine(images, "b.png"), true), TrainingData.FindMask(Path.Combine(images, "b.png")));
        Assert.Null(TrainingData.FindMask(Path.Combine(images, "c.png")));

        var model = ModelFolder.Open(Fixtures.SdTiny());
        using var cache = new TrainingCache(dir.File("out"), model, 1);
        var geometry = new CoverGeometry(64, 64, new CropPlacement.Center(), false);
        var a = cache.Mask(Path.Combine(images, "a.png"), TrainingData.FindMask(Path.Combine(images, "a.png"))!, geometry).ToFloat32Array();
        Assert.Equal(64, a.Length);
        for (int i = 0; i < 64; i++) Assert.Equal(i % 8 < 4 ? 1f : 0f, a[i]);
        // Flipped with the image: the mask follows it.
        var flipped = cache.Mask(Path.Combine(images, "a.png"), TrainingData.FindMask(Path.Combine(images, "a.png"))!, geometry with { Flip = true }).ToFloat32Array();
        for (int i = 0; i < 64; i++) Assert.Equal(i % 8 < 4 ? 0f : 1f, flipped[i]);
        var b = cache.Mask(Path.Combine(images, "b.png"), new MaskSource(Path.Combine(images, "b.png"), true), geometry).ToFloat32Array();
        Assert.Equal(0.5f, b[0]);
        for (int i = 1; i < 64; i++) Assert.Equal(i % 8 < 4 ? 1f : 0f, b[i]);
    }

    [Fact]
    public void Masked_loss_run_trains_with_masks()
    {
        using var dir = Fixtures.TempDir();
        var images = dir.File("images");
        Directory.CreateDirectory(images);
        for (int i = 0; i < 3; i++)
        {
            File.Copy(Path.Combine(TrainingFixtures.Concepts("orange-tiles"), $"orange_tiles_0{i + 1}.png"), Path.Combine(images, $"tile{i}.png"));
            if (i < 2) PngFile.Write(Path.Combine(images, $"tile{i}.mask.png"), Halves(64, 64, 255, 0));
        }
        var options = TrainingFixtures.Run(dir.File("run"), steps: 3) with
        {
            MaskedLoss = true, CheckpointEveryNSteps = 0, EvalEveryNSteps = 1,
            Concepts = new[] { TrainingFixtures.Tiles(classImagesPer: 0) with { InstanceDataDir = images, NSaveSample = 0 } },
        };
        var progress = new TrainingFixtures.Recorder();
        var result = new DreamBoothTrainer(options).Run(progress);
        Assert.True(result.Completed);
        Assert.Contains("masked loss: 2 of 3 instance images have a mask (.mask.png or alpha); the others count whole", progress.Messages);
        Assert.All(result.EvalLosses, e => Assert.True(double.IsFinite(e.Loss) && e.Loss > 0));
    }

    private static readonly CaptionOptions Shuffle = new(Shuffle: true, KeepTokens: 1);

    [Fact]
    public void Shuffle_keeps_the_first_tokens_and_permutes_the_rest_by_seed_and_position()
    {
        const string prompt = "sks dog, red collar, on grass, sunny, photo";
        var tags = prompt.Split(", ");
        var seen = new HashSet<string>();
        for (int position = 0; position < 200; position++)
        {
            var shuffled = Captions.Augment(prompt, Shuffle, 7, position);
            Assert.Equal(shuffled, Captions.Augment(prompt, Shuffle, 7, position));
            var parts = shuffled.Split(", ");
            Assert.Equal("sks dog", parts[0]);
            Assert.Equal(tags.Order(), parts.Order());
            seen.Add(shuffled);
        }
        Assert.True(seen.Count > 12, $"only {seen.Count} orders of 4 tags in 200 draws");
        Assert.Equal(prompt, Captions.Augment(prompt, new CaptionOptions(), 7, 3));
        Assert.Equal("a, b, c", Captions.Augment("a,b , c", new CaptionOptions(Shuffle: true, KeepTokens: 5), 7, 3));
    }

    [Fact]
    public void Dropout_rates_hold_over_many_draws()
    {
        const string prompt = "sks, t1, t2, t3, t4, t5, t6, t7, t8";
        int n = 4000, empty = 0, kept = 0, tagSlots = 0;
        for (int position = 0; position < n; position++)
        {
            if (Captions.Augment(prompt, new CaptionOptions(DropoutRate: 0.1), 1, position) == "") empty++;
            var dropped = Captions.Augment(prompt, new CaptionOptions(KeepTokens: 1, TagDropoutRate: 0.3), 1, position).Split(", ");
            Assert.Equal("sks", dropped[0]);
            kept += dropped.Length - 1;
            tagSlots += 8;
        }
        // Binomial 3σ bounds: 0.1·4000 ± 57; 0.7·32000 ± 246.
        Assert.InRange(empty, 400 - 57, 400 + 57);
        Assert.InRange(kept, 22400 - 246, 22400 + 246);
    }

    [Fact]
    public void Caption_extension_is_read_before_txt()
    {
        using var dir = Fixtures.TempDir();
        var image = dir.File("x.png");
        PngFile.Write(image, Halves(8, 8, 1, 2));
        File.WriteAllText(dir.File("x.txt"), "from txt");
        Assert.Equal("from txt", TrainingData.Caption(image, ".caption"));
        File.WriteAllText(dir.File("x.caption"), "from caption");
        Assert.Equal("from caption", TrainingData.Caption(image, ".caption"));
        Assert.Equal("from txt", TrainingData.Caption(image));
    }
}
