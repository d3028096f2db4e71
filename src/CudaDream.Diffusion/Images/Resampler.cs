namespace CudaDream.Diffusion.Images;

/// <summary>Resampling filters, as Pillow defines them.</summary>
public enum ResampleFilter
{
    /// <summary>Triangle filter; what diffusers' DreamBooth scripts resize with (torchvision Resize, BILINEAR).</summary>
    Bilinear,
    /// <summary>Keys cubic, a = −0.5.</summary>
    Bicubic,
    /// <summary>Lanczos, 3 lobes.</summary>
    Lanczos,
    /// <summary>Box (Pillow's BOX): when shrinking, the area average of the covered pixels, as OpenCV's INTER_AREA.</summary>
    Box,
}

/// <summary>
/// Pillow's convolution resampler (Image.resize, libImaging/Resample.c), reproduced so that training
/// images are the pixels the reference DreamBooth scripts would see: separable, horizontal pass first,
/// the filter widened by the scale factor when shrinking (antialiasing, unlike a plain cubic sampler),
/// weights normalised and held in 22-bit fixed point, an 8-bit image between the passes.
/// </summary>
public static class Resampler
{
    private const int PrecisionBits = 32 - 8 - 2;

    public static RgbImage Resize(RgbImage image, int width, int height, ResampleFilter filter = ResampleFilter.Bilinear)
    {
        if (width <= 0 || height <= 0) throw new ArgumentOutOfRangeException(nameof(width), $"target size {width}x{height}");
        if (width == image.Width && height == image.Height) return new RgbImage(width, height, (byte[])image.Rgb.Clone());
        var horizontal = width == image.Width ? image : Pass(image, width, filter, horizontal: true);
        return height == image.Height ? horizontal : Pass(horizontal, height, filter, horizontal: false);
    }

    private static (double Support, Func<double, double> Kernel) Filter(ResampleFilter filter) => filter switch
    {
        ResampleFilter.Bilinear => (1.0, x => Math.Abs(x) < 1 ? 1 - Math.Abs(x) : 0),
        ResampleFilter.Bicubic => (2.0, Bicubic),
        ResampleFilter.Lanczos => (3.0, x => x > -3 && x < 3 ? Sinc(x) * Sinc(x / 3) : 0),
        ResampleFilter.Box => (0.5, x => x >= -0.5 && x < 0.5 ? 1 : 0),
        _ => throw new ArgumentOutOfRangeException(nameof(filter)),
    };

    private static double Bicubic(double x)
    {
        const double a = -0.5;
        x = Math.Abs(x);
        if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
        if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
        return 0;
    }

    private static double Sinc(double x)
    {
        if (x == 0) return 1;
        x *= Math.PI;
        return Math.Sin(x) / x;
    }

    /// <summary>For each output index: the first input index and the fixed-point weights of the inputs it reads.</summary>
    private static (int[] First, int[][] Weights) Coefficients(int inSize, int outSize, ResampleFilter filter)
    {
        var (support, kernel) = Filter(filter);
        double scale = (double)inSize / outSize;
        double filterScale = Math.Max(scale, 1.0);
        support *= filterScale;
        var first = new int[outSize];
        var weights = new int[outSize][];
        double reciprocal = 1.0 / filterScale; // multiplied, not divided, to round exactly as Pillow does
        for (int o = 0; o < outSize; o++)
        {
            double center = (o + 0.5) * scale;
            int min = Math.Max((int)(center - support + 0.5), 0);
            int count = Math.Min((int)(center + support + 0.5), inSize) - min;
            var k = new double[count];
            double sum = 0;
            for (int i = 0; i < count; i++)
            {
                k[i] = kernel((i + min - center + 0.5) * reciprocal);
                sum += k[i];
            }
            var fixedPoint = new int[count];
            for (int i = 0; i < count; i++)
            {
                double w = sum != 0 ? k[i] / sum : k[i];
                fixedPoint[i] = (int)(w < 0 ? -0.5 + w * (1 << PrecisionBits) : 0.5 + w * (1 << PrecisionBits));
            }
            first[o] = min;
            weights[o] = fixedPoint;
        }
        return (first, weights);
    }

    private static RgbImage Pass(RgbImage src, int outSize, ResampleFilter filter, bool horizontal)
    {
        int inSize = horizontal ? src.Width : src.Height;
        var (first, weights) = Coefficients(inSize, outSize, filter);
        int ow = horizontal ? outSize : src.Width, oh = horizontal ? src.Height : outSize;
        var dst = new byte[checked(3 * ow * oh)];
        var s = src.Rgb;
        // Input step between neighbouring taps, and start of tap 0, in bytes.
        int tapStride = horizontal ? 3 : 3 * src.Width;
        Parallel.For(0, oh, y =>
        {
            for (int x = 0; x < ow; x++)
            {
                int o = horizontal ? x : y;
                var w = weights[o];
                int baseIndex = horizontal ? 3 * (y * src.Width + first[o]) : 3 * (first[o] * src.Width + x);
                long r = 1L << (PrecisionBits - 1), g = r, b = r;
                for (int i = 0, p = baseIndex; i < w.Length; i++, p += tapStride)
                {
                    r += s[p] * (long)w[i];
                    g += s[p + 1] * (long)w[i];
                    b += s[p + 2] * (long)w[i];
                }
                int d = 3 * (y * ow + x);
                dst[d] = Clip8(r);
                dst[d + 1] = Clip8(g);
                dst[d + 2] = Clip8(b);
            }
        });
        return new RgbImage(ow, oh, dst);
    }

    private static byte Clip8(long value)
    {
        long v = value >> PrecisionBits;
        return v < 0 ? (byte)0 : v > 255 ? (byte)255 : (byte)v;
    }
}
