using CudaDream.Engine.Tensors;

namespace CudaDream.Diffusion.Images;

/// <summary>Where a crop window sits inside the resized image.</summary>
public abstract record CropPlacement
{
    private CropPlacement() { }

    /// <summary>Centred, offsets rounded half to even (torchvision's CenterCrop).</summary>
    public sealed record Center : CropPlacement;

    /// <summary>An explicit top-left corner, clamped into the image.</summary>
    public sealed record At(int X, int Y) : CropPlacement;

    /// <summary>A uniformly drawn corner: u, v ∈ [0, 1) from the caller's counter-based generator pick one of the
    /// (slack + 1) offsets per axis, as torchvision's RandomCrop picks randint(0, slack + 1).</summary>
    public sealed record Random(double U, double V) : CropPlacement;
}

/// <summary>
/// How a training image becomes an input of Width×Height: the transform, and the key its result is cached under
/// (with the image's content hash, by the caller).
/// </summary>
public abstract record ImageGeometry(int Width, int Height, CropPlacement Crop, bool Flip)
{
    public abstract string Key { get; }
    public abstract RgbImage Apply(RgbImage image);
}

/// <summary>The DreamBooth scripts' transform at a fixed resolution (<see cref="ImagePreprocessor.Prepare"/>).</summary>
public sealed record CoverGeometry(int Width, int Height, CropPlacement Crop, bool Flip) : ImageGeometry(Width, Height, Crop, Flip)
{
    public override string Key => $"{Width}x{Height}|{Crop}|{Flip}";
    public override RgbImage Apply(RgbImage image) => ImagePreprocessor.Prepare(image, new ImagePreprocessOptions { Width = Width, Height = Height }, Crop, Flip);
}

/// <summary>kohya's bucket transform: resize to exactly ResizedWidth×ResizedHeight, crop to the bucket (<see cref="ImagePreprocessor.PrepareBucket"/>).</summary>
public sealed record BucketGeometry(int ResizedWidth, int ResizedHeight, int Width, int Height, CropPlacement Crop, bool Flip) : ImageGeometry(Width, Height, Crop, Flip)
{
    public override string Key => $"bucket{Width}x{Height}|resized{ResizedWidth}x{ResizedHeight}|{Crop}|{Flip}";
    public override RgbImage Apply(RgbImage image) => ImagePreprocessor.PrepareBucket(image, ResizedWidth, ResizedHeight, Width, Height, Crop, Flip);
}

/// <summary>How a training image becomes the model's input.</summary>
public sealed record ImagePreprocessOptions
{
    public int Width { get; init; } = 512;
    public int Height { get; init; } = 512;
    public ResampleFilter Filter { get; init; } = ResampleFilter.Bilinear;
}

/// <summary>
/// The DreamBooth scripts' image transform (diffusers train_dreambooth*.py: Resize(resolution, BILINEAR),
/// CenterCrop or RandomCrop(resolution), optional horizontal flip, ToTensor, Normalize([0.5], [0.5])),
/// generalised to a W×H target: scale so the image covers the target, crop, flip, map bytes to [−1, 1].
/// No randomness lives here: the caller passes the crop placement and the flip decision.
/// </summary>
public static class ImagePreprocessor
{
    public static Tensor ToTrainingTensor(RgbImage image, ImagePreprocessOptions options, CropPlacement placement, bool flip)
    {
        var prepared = Prepare(image, options, placement, flip);
        return ImageTensors.ToChw(prepared);
    }

    public static RgbImage Prepare(RgbImage image, ImagePreprocessOptions options, CropPlacement placement, bool flip)
    {
        var (rw, rh) = CoverSize(image.Width, image.Height, options.Width, options.Height);
        var resized = Resampler.Resize(image, rw, rh, options.Filter);
        var (x, y) = CropOffset(rw, rh, options.Width, options.Height, placement);
        var cropped = Crop(resized, x, y, options.Width, options.Height);
        return flip ? FlipHorizontal(cropped) : cropped;
    }

    /// <summary>
    /// kohya's trim_and_resize_if_required: the image resized to exactly <paramref name="resizedWidth"/>×<paramref name="resizedHeight"/>
    /// (area averaging when shrinking, as OpenCV's INTER_AREA; Lanczos when enlarging), cropped to width×height — centred
    /// at ⌊slack/2⌋ as kohya, or at the drawn offsets —, then flipped.
    /// </summary>
    public static RgbImage PrepareBucket(RgbImage image, int resizedWidth, int resizedHeight, int width, int height, CropPlacement placement, bool flip)
    {
        bool enlarging = resizedWidth > image.Width || resizedHeight > image.Height;
        var resized = Resampler.Resize(image, resizedWidth, resizedHeight, enlarging ? ResampleFilter.Lanczos : ResampleFilter.Box);
        var (x, y) = placement is CropPlacement.Center
            ? ((resizedWidth - width) / 2, (resizedHeight - height) / 2)
            : CropOffset(resizedWidth, resizedHeight, width, height, placement);
        var cropped = Crop(resized, x, y, width, height);
        return flip ? FlipHorizontal(cropped) : cropped;
    }

    /// <summary>
    /// The smallest size with the image's aspect ratio that covers width×height; the other side is truncated
    /// as torchvision computes it (int(size · long / short)), so a square target reproduces Resize(size).
    /// </summary>
    public static (int Width, int Height) CoverSize(int imageWidth, int imageHeight, int width, int height)
    {
        if ((long)width * imageHeight >= (long)height * imageWidth)
            return (width, (int)Math.Max(height, (long)width * imageHeight / imageWidth));
        return ((int)Math.Max(width, (long)height * imageWidth / imageHeight), height);
    }

    public static (int X, int Y) CropOffset(int imageWidth, int imageHeight, int width, int height, CropPlacement placement)
    {
        int slackX = imageWidth - width, slackY = imageHeight - height;
        if (slackX < 0 || slackY < 0) throw new ArgumentException($"a {width}x{height} crop does not fit a {imageWidth}x{imageHeight} image");
        return placement switch
        {
            CropPlacement.Center => ((int)Math.Round(slackX / 2.0, MidpointRounding.ToEven), (int)Math.Round(slackY / 2.0, MidpointRounding.ToEven)),
            CropPlacement.At at => (Math.Clamp(at.X, 0, slackX), Math.Clamp(at.Y, 0, slackY)),
            CropPlacement.Random r => (Pick(r.U, slackX), Pick(r.V, slackY)),
            _ => throw new ArgumentOutOfRangeException(nameof(placement)),
        };
    }

    private static int Pick(double u, int slack)
    {
        if (!(u >= 0 && u < 1)) throw new ArgumentOutOfRangeException(nameof(u), $"{u} is not in [0, 1)");
        return Math.Min((int)(u * (slack + 1)), slack);
    }

    public static RgbImage Crop(RgbImage image, int x, int y, int width, int height)
    {
        if (x < 0 || y < 0 || width <= 0 || height <= 0 || x + width > image.Width || y + height > image.Height)
            throw new ArgumentOutOfRangeException(nameof(x), $"crop {width}x{height} at ({x},{y}) is outside a {image.Width}x{image.Height} image");
        var rgb = new byte[3 * width * height];
        for (int row = 0; row < height; row++)
            Buffer.BlockCopy(image.Rgb, 3 * ((y + row) * image.Width + x), rgb, 3 * row * width, 3 * width);
        return new RgbImage(width, height, rgb);
    }

    public static RgbImage FlipHorizontal(RgbImage image)
    {
        var rgb = new byte[image.Rgb.Length];
        for (int y = 0; y < image.Height; y++)
            for (int x = 0; x < image.Width; x++)
                Buffer.BlockCopy(image.Rgb, 3 * (y * image.Width + image.Width - 1 - x), rgb, 3 * (y * image.Width + x), 3);
        return new RgbImage(image.Width, image.Height, rgb);
    }
}
