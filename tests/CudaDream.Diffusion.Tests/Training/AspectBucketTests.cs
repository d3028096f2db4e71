using CudaDream.Diffusion.Training;
using Xunit;

namespace CudaDream.Diffusion.Tests.Training;

/// <summary>
/// kohya's buckets at resolution 512 (min 256, max 1024, step 64): the expected lists and assignments were produced by
/// Reference/kohya_buckets.py, an independent Python rendering of sd-scripts' published algorithm
/// (make_bucket_resolutions, BucketManager.select_bucket), and checked by hand for a few (noted below).
/// </summary>
public class AspectBucketTests
{
    private static readonly BucketOptions At512 = new(512, 512);

    [Fact]
    public void Predefined_buckets_at_512_are_kohyas()
    {
        // By hand: area 262144; w = 256 → 262144/256 = 1024 → min(1024, 1024) = 1024; w = 320 → 819 → 768; w = 448 → 585 → 576.
        var expected = new (int, int)[]
        {
            (256, 832), (256, 896), (256, 960), (256, 1024), (320, 704), (320, 768), (384, 640), (448, 576), (512, 512),
            (576, 448), (640, 384), (704, 320), (768, 320), (832, 256), (896, 256), (960, 256), (1024, 256),
        };
        Assert.Equal(expected, AspectBuckets.Predefined(At512).Select(b => (b.Width, b.Height)));
    }

    [Theory]
    // (image) → (bucket, resized size). By hand for 1024×768: aspect 1.333; nearest bucket 576×448 (1.286); wider than
    // the bucket → scale 448/768, width int(1024·0.5833 + 0.5) = 597.
    [InlineData(512, 512, 512, 512, 512, 512)]
    [InlineData(1024, 768, 576, 448, 597, 448)]
    [InlineData(768, 1024, 448, 576, 448, 597)]
    [InlineData(640, 480, 576, 448, 597, 448)]
    [InlineData(1920, 1080, 640, 384, 683, 384)]
    [InlineData(600, 800, 448, 576, 448, 597)]
    [InlineData(300, 900, 256, 832, 277, 832)]
    [InlineData(2000, 500, 1024, 256, 1024, 256)]
    [InlineData(512, 768, 384, 640, 427, 640)]
    [InlineData(100, 100, 512, 512, 512, 512)]
    [InlineData(1000, 999, 512, 512, 513, 512)]
    public void Images_go_to_kohyas_bucket(int w, int h, int bw, int bh, int rw, int rh)
    {
        var fit = AspectBuckets.Select(At512, AspectBuckets.Predefined(At512), w, h);
        Assert.Equal((bw, bh, rw, rh), (fit.Bucket.Width, fit.Bucket.Height, fit.ResizedWidth, fit.ResizedHeight));
    }

    [Theory]
    // bucket_no_upscale: by hand for 300×900 (area 270000 > 262144): √(262144/3) = 295.6 → 256, 256·3 = 768 exact, so
    // the width-rounded size (256, 768) keeps the aspect; 100×100 stays 100×100 in the bucket 64×64 (cropped, not enlarged).
    [InlineData(512, 512, 512, 512, 512, 512)]
    [InlineData(1024, 768, 512, 384, 512, 384)]
    [InlineData(768, 1024, 384, 512, 384, 512)]
    [InlineData(640, 480, 512, 384, 512, 384)]
    [InlineData(1920, 1080, 640, 384, 683, 384)]
    [InlineData(600, 800, 384, 512, 384, 512)]
    [InlineData(300, 900, 256, 768, 256, 768)]
    [InlineData(2000, 500, 1024, 256, 1024, 256)]
    [InlineData(512, 768, 384, 576, 384, 576)]
    [InlineData(100, 100, 64, 64, 100, 100)]
    [InlineData(1000, 999, 512, 512, 513, 512)]
    public void No_upscale_buckets_are_kohyas(int w, int h, int bw, int bh, int rw, int rh)
    {
        var fit = AspectBuckets.Select(At512 with { NoUpscale = true }, [], w, h);
        Assert.Equal((bw, bh, rw, rh), (fit.Bucket.Width, fit.Bucket.Height, fit.ResizedWidth, fit.ResizedHeight));
    }
}
