namespace CudaDream.Diffusion.Training;

/// <summary>A bucket: the training size (pixels) of every image in it.</summary>
public readonly record struct Bucket(int Width, int Height)
{
    public override string ToString() => $"{Width}x{Height}";
}

/// <summary>Where an image goes: its bucket, the size it is resized to before the crop, and the aspect-ratio error.</summary>
public sealed record BucketFit(Bucket Bucket, int ResizedWidth, int ResizedHeight, double AspectError);

/// <summary>The bucket settings: the base resolution (area ≈ width·height), side limits, step, and whether images may be enlarged.</summary>
public sealed record BucketOptions(int Width, int Height, int MinReso = 256, int MaxReso = 1024, int Steps = 64, bool NoUpscale = false);

/// <summary>
/// Aspect-ratio bucketing as kohya's sd-scripts does it (library/model_util.py make_bucket_resolutions and
/// train_util.py BucketManager.select_bucket), so a kohya user's images land in the same buckets at the same sizes:
/// <list type="bullet">
/// <item>The predefined buckets: the square of side ⌊√(W·H)/s⌋·s, and for every width w = min, min + s, … ≤ max the
/// pair (w, h) and (h, w) with h = min(max, ⌊(W·H div w)/s⌋·s) when h ≥ min; sorted by (width, height).</item>
/// <item>An image of size (iw, ih) keeps its own size when that is a predefined bucket, else takes the first predefined
/// bucket with the least |bw/bh − iw/ih|; it is scaled to cover the bucket (by bh/ih when it is wider than the bucket,
/// else by bw/iw), each side rounded as int(x + 0.5), then cropped to the bucket.</item>
/// <item>With <c>bucket_no_upscale</c> there is no predefined list: an image larger than W·H in area is scaled down to
/// about that area, rounding the width or the height to the step — whichever keeps the aspect ratio better — and the
/// bucket is the resized size truncated to multiples of the step (crop, no padding); smaller images are not enlarged.</item>
/// </list>
/// </summary>
public static class AspectBuckets
{
    public static List<Bucket> Predefined(BucketOptions o)
    {
        long area = (long)o.Width * o.Height;
        var set = new HashSet<Bucket>();
        int side = (int)(Math.Floor(Math.Sqrt(area) / o.Steps) * o.Steps);
        set.Add(new Bucket(side, side));
        for (int w = o.MinReso; w <= o.MaxReso; w += o.Steps)
        {
            int h = (int)Math.Min(o.MaxReso, area / w / o.Steps * o.Steps);
            if (h < o.MinReso) continue;
            set.Add(new Bucket(w, h));
            set.Add(new Bucket(h, w));
        }
        return set.OrderBy(b => b.Width).ThenBy(b => b.Height).ToList();
    }

    /// <summary>The bucket and resize of an image of <paramref name="width"/>×<paramref name="height"/> (predefined: the list of <see cref="Predefined"/>).</summary>
    public static BucketFit Select(BucketOptions o, IReadOnlyList<Bucket> predefined, int width, int height)
    {
        double aspect = (double)width / height;
        if (!o.NoUpscale)
        {
            var bucket = new Bucket(width, height);
            if (!predefined.Contains(bucket))
            {
                int best = 0;
                double bestError = double.PositiveInfinity;
                for (int i = 0; i < predefined.Count; i++)
                {
                    double error = Math.Abs((double)predefined[i].Width / predefined[i].Height - aspect);
                    if (error < bestError) { bestError = error; best = i; }
                }
                bucket = predefined[best];
            }
            var (rw, rh) = Cover(bucket, width, height);
            return new BucketFit(bucket, rw, rh, (double)bucket.Width / bucket.Height - aspect);
        }

        long maxArea = (long)o.Width * o.Height;
        int resizedWidth = width, resizedHeight = height;
        if ((long)width * height > maxArea)
        {
            double w = Math.Sqrt(maxArea * aspect), h = maxArea / w;
            int widthRounded = RoundToSteps(w, o.Steps);
            int heightInWidthRounded = RoundToSteps(widthRounded / aspect, o.Steps);
            double aspectWidthRounded = (double)widthRounded / heightInWidthRounded;
            int heightRounded = RoundToSteps(h, o.Steps);
            int widthInHeightRounded = RoundToSteps(heightRounded * aspect, o.Steps);
            double aspectHeightRounded = (double)widthInHeightRounded / heightRounded;
            if (Math.Abs(aspectWidthRounded - aspect) < Math.Abs(aspectHeightRounded - aspect))
                (resizedWidth, resizedHeight) = (widthRounded, (int)(widthRounded / aspect + 0.5));
            else
                (resizedWidth, resizedHeight) = ((int)(heightRounded * aspect + 0.5), heightRounded);
        }
        var own = new Bucket(resizedWidth - resizedWidth % o.Steps, resizedHeight - resizedHeight % o.Steps);
        return new BucketFit(own, resizedWidth, resizedHeight, (double)own.Width / own.Height - aspect);
    }

    /// <summary>An image brought into a given bucket: scaled to cover it (kohya's scale rule and rounding), to be cropped.</summary>
    public static BucketFit FitInto(Bucket bucket, int width, int height)
    {
        var (rw, rh) = Cover(bucket, width, height);
        return new BucketFit(bucket, rw, rh, (double)bucket.Width / bucket.Height - (double)width / height);
    }

    private static (int Width, int Height) Cover(Bucket bucket, int width, int height)
    {
        double aspect = (double)width / height;
        double scale = aspect > (double)bucket.Width / bucket.Height ? (double)bucket.Height / height : (double)bucket.Width / width;
        // Rounded as kohya does; at least the bucket (a scale of exactly bh/ih can round a side one short).
        return (Math.Max(bucket.Width, (int)(width * scale + 0.5)), Math.Max(bucket.Height, (int)(height * scale + 0.5)));
    }

    private static int RoundToSteps(double x, int steps)
    {
        int v = (int)(x + 0.5);
        return v - v % steps;
    }
}
