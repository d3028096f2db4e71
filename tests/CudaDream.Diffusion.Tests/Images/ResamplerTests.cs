using CudaDream.Diffusion.Images;
using CudaDream.Engine.Tensors;
using Xunit;

namespace CudaDream.Diffusion.Tests.Images;

public class ResamplerTests
{
    [Theory]
    [InlineData(ResampleFilter.Bilinear, "bilinear")]
    [InlineData(ResampleFilter.Bicubic, "bicubic")]
    [InlineData(ResampleFilter.Lanczos, "lanczos")]
    public void ResizeMatchesPillow(ResampleFilter filter, string name)
    {
        var source = ImageReferences.Load("source_97x61.png");
        foreach (var (w, h) in new[] { (40, 25), (150, 94), (97, 30) })
        {
            var expected = ImageReferences.Load($"resize_{name}_{w}x{h}.png");
            int diff = ImageReferences.MaxAbsDifference(expected, Resampler.Resize(source, w, h, filter));
            Assert.True(diff == 0, $"{name} {w}x{h}: max |diff| {diff}");
        }
    }

    [Fact]
    public void DreamBoothCenterCropMatchesTorchvisionOnPillow()
    {
        var source = ImageReferences.Load("source_97x61.png");
        var options = new ImagePreprocessOptions { Width = 32, Height = 32 };
        var prepared = ImagePreprocessor.Prepare(source, options, new CropPlacement.Center(), flip: false);
        Assert.Equal(ImageReferences.Load("dreambooth_center_32.png").Rgb, prepared.Rgb);

        // ToTensor + Normalize([0.5], [0.5]) on the reference bytes.
        var expected = ImageReferences.Load("dreambooth_center_32.png");
        var tensor = ImagePreprocessor.ToTrainingTensor(source, options, new CropPlacement.Center(), flip: false);
        Assert.Equal(new[] { 3, 32, 32 }, tensor.Shape);
        Assert.Equal(DType.F32, tensor.DType);
        var values = tensor.ToFloat32Array();
        for (int c = 0; c < 3; c++)
            for (int p = 0; p < 32 * 32; p++)
                Assert.Equal((expected.Rgb[3 * p + c] / 255f - 0.5f) / 0.5f, values[c * 1024 + p]);
    }

    [Fact]
    public void CoverSizeFollowsTorchvisionForSquareTargetsAndCoversOthers()
    {
        Assert.Equal((50, 32), ImagePreprocessor.CoverSize(97, 61, 32, 32));      // int(32 * 97 / 61) = 50
        Assert.Equal((512, 682), ImagePreprocessor.CoverSize(3000, 4000, 512, 512)); // int(512 * 4000 / 3000) = 682
        Assert.Equal((512, 512), ImagePreprocessor.CoverSize(1024, 1024, 512, 512));
        Assert.Equal((1024, 768), ImagePreprocessor.CoverSize(640, 480, 512, 768));
        Assert.Equal((768, 576), ImagePreprocessor.CoverSize(640, 480, 768, 512));
    }

    [Fact]
    public void CropOffsetsCenterRandomAndExplicit()
    {
        Assert.Equal((9, 0), ImagePreprocessor.CropOffset(50, 32, 32, 32, new CropPlacement.Center()));   // round(9.0)
        Assert.Equal((0, 0), ImagePreprocessor.CropOffset(33, 32, 32, 32, new CropPlacement.Center()));   // round(0.5) = 0
        Assert.Equal((2, 0), ImagePreprocessor.CropOffset(35, 32, 32, 32, new CropPlacement.Center()));   // round(1.5) = 2
        Assert.Equal((0, 0), ImagePreprocessor.CropOffset(50, 40, 32, 32, new CropPlacement.Random(0, 0)));
        Assert.Equal((18, 8), ImagePreprocessor.CropOffset(50, 40, 32, 32, new CropPlacement.Random(0.9999, 0.9999)));
        Assert.Equal((9, 4), ImagePreprocessor.CropOffset(50, 40, 32, 32, new CropPlacement.Random(0.5, 0.5)));
        Assert.Equal((18, 3), ImagePreprocessor.CropOffset(50, 40, 32, 32, new CropPlacement.At(100, 3)));
        Assert.Throws<ArgumentOutOfRangeException>(() => ImagePreprocessor.CropOffset(50, 40, 32, 32, new CropPlacement.Random(1.0, 0)));
        Assert.Throws<ArgumentException>(() => ImagePreprocessor.CropOffset(20, 40, 32, 32, new CropPlacement.Center()));
    }

    [Fact]
    public void CropCopiesTheWindowAndFlipMirrorsRows()
    {
        var source = ImageReferences.Load("source_97x61.png");
        var crop = ImagePreprocessor.Crop(source, 10, 20, 30, 15);
        Assert.Equal(source[10, 20], crop[0, 0]);
        Assert.Equal(source[39, 34], crop[29, 14]);
        var flipped = ImagePreprocessor.FlipHorizontal(source);
        for (int y = 0; y < source.Height; y += 7)
            for (int x = 0; x < source.Width; x += 5)
                Assert.Equal(source[source.Width - 1 - x, y], flipped[x, y]);
        Assert.Equal(source.Rgb, ImagePreprocessor.FlipHorizontal(flipped).Rgb);
        Assert.Throws<ArgumentOutOfRangeException>(() => ImagePreprocessor.Crop(source, 90, 0, 10, 10));
    }

    [Fact]
    public void NonSquareTargetWithRandomCropAndFlip()
    {
        var source = ImageReferences.Load("source_97x61.png");
        var options = new ImagePreprocessOptions { Width = 48, Height = 24 };
        var prepared = ImagePreprocessor.Prepare(source, options, new CropPlacement.Random(0.5, 0.5), flip: true);
        Assert.Equal((48, 24), (prepared.Width, prepared.Height));
        var (cw, ch) = ImagePreprocessor.CoverSize(97, 61, 48, 24);
        var resized = Resampler.Resize(source, cw, ch);
        var (x, y) = ImagePreprocessor.CropOffset(cw, ch, 48, 24, new CropPlacement.Random(0.5, 0.5));
        Assert.Equal(ImagePreprocessor.FlipHorizontal(ImagePreprocessor.Crop(resized, x, y, 48, 24)).Rgb, prepared.Rgb);
    }
}
