using CudaDream.Diffusion.Images;
using CudaDream.Engine.Tensors;
using Xunit;

namespace CudaDream.Diffusion.Tests.Images;

public class ImageTensorsTests
{
    [Fact]
    public void ChwMinusOneToOneRoundTripsBytes()
    {
        var source = ImageReferences.Load("source_97x61.png");
        var tensor = ImageTensors.ToChw(source);
        Assert.Equal(new[] { 3, 61, 97 }, tensor.Shape);
        var back = Assert.Single(ImageTensors.FromTensor(tensor, PixelRange.MinusOneToOne, PixelLayout.Chw));
        Assert.Equal(source.Rgb, back.Rgb);
        var batched = ImageTensors.FromTensor(tensor.Reshape(1, 3, 61, 97), PixelRange.MinusOneToOne, PixelLayout.Chw);
        Assert.Equal(source.Rgb, Assert.Single(batched).Rgb);
    }

    [Fact]
    public void HwcZeroToOneBatchAsDiffusersNumpyOutput()
    {
        // Two 1x2 images: numpy's (x * 255).round() rounds half to even; values outside [0, 1] are clamped.
        var data = new float[]
        {
            0f, 0.5f, 1f,   126.5f / 255, 127.5f / 255, 2f,
            -1f, float.NaN, 0.25f,   1f, 1f, 1f,
        };
        var images = ImageTensors.FromTensor(Tensor.FromArray(data, 2, 1, 2, 3), PixelRange.ZeroToOne, PixelLayout.Hwc);
        Assert.Equal(2, images.Length);
        Assert.Equal(new byte[] { 0, 128, 255, 126, 128, 255 }, images[0].Rgb);
        Assert.Equal(new byte[] { 0, 0, 64, 255, 255, 255 }, images[1].Rgb);
    }

    [Fact]
    public void RejectsTensorsThatAreNotRgbImages()
    {
        Assert.Throws<ArgumentException>(() => ImageTensors.FromTensor(Tensor.Zeros(DType.F32, 4, 8, 8), PixelRange.ZeroToOne, PixelLayout.Chw));
        Assert.Throws<ArgumentException>(() => ImageTensors.FromTensor(Tensor.Zeros(DType.F32, 8, 8), PixelRange.ZeroToOne, PixelLayout.Hwc));
    }
}
