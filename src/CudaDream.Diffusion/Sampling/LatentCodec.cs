using CudaDream.Diffusion.Images;
using CudaDream.Diffusion.Sampling.Engines;
using CudaDream.Engine.Randomness;
using CudaDream.Engine.Tensors;

namespace CudaDream.Diffusion.Sampling;

/// <summary>Between latents and pixels, with diffusers' arithmetic (float32).</summary>
public static class LatentCodec
{
    /// <summary>
    /// clamp(vae.decode(latents / scaling) / 2 + 0.5, 0, 1) as F32 [N, H, W, 3] (diffusers' output_type="np"). The
    /// decoder runs one image at a time, as the ONNX pipeline does, to bound its activation memory.
    /// </summary>
    public static Tensor Decode(IPipelineEngine engine, ReadOnlySpan<float> latents, int count, int channels, int height, int width, float scaling)
    {
        int per = channels * height * width;
        Tensor? pixels = null;
        int plane = 0;
        for (int i = 0; i < count; i++)
        {
            var z = new float[per];
            var src = latents.Slice(i * per, per);
            for (int j = 0; j < per; j++) z[j] = src[j] / scaling;
            var image = engine.Decode(Tensor.FromArray(z, 1, channels, height, width));
            if (image.Rank != 4 || image.Shape[0] != 1 || image.Shape[1] != 3)
                throw new Engine.CudaDreamException($"the VAE decoder returned {image}, expected [1, 3, H, W]");
            if (pixels == null)
            {
                plane = image.Shape[2] * image.Shape[3];
                pixels = Tensor.Zeros(DType.F32, count, image.Shape[2], image.Shape[3], 3);
            }
            var decoded = image.ReadOnlySpan<float>();
            var dst = pixels.Span<float>().Slice(i * 3 * plane, 3 * plane);
            for (int p = 0; p < plane; p++)
                for (int c = 0; c < 3; c++)
                    dst[3 * p + c] = Math.Clamp(decoded[c * plane + p] / 2f + 0.5f, 0f, 1f);
        }
        return pixels!;
    }

    /// <summary>
    /// Latents drawn from the VAE posterior, z = scaling · (μ + σ·n) (diffusers' DiagonalGaussianDistribution.sample,
    /// log-variance clamped to [−30, 20]), for <paramref name="moments"/> [N, 2C, h, w] (mean, then log-variance).
    /// Each image gives <paramref name="copies"/> consecutive rows [N·copies, C, h, w]; the noise is one draw of
    /// <paramref name="noise"/> of that size.
    /// </summary>
    public static Tensor SampleLatents(Tensor moments, float scaling, INoiseSource noise, int copies = 1)
    {
        if (moments.Rank != 4 || moments.Shape[1] % 2 != 0)
            throw new Engine.CudaDreamException($"VAE moments are {moments}, expected [N, 2C, h, w]");
        int n = moments.Shape[0], c = moments.Shape[1] / 2, h = moments.Shape[2], w = moments.Shape[3];
        int per = c * h * w;
        var m = moments.ToFloat32Array();
        var draw = new float[n * copies * per];
        noise.Fill(draw);
        var z = new float[draw.Length];
        for (int i = 0; i < n; i++)
        {
            var mean = m.AsSpan(i * 2 * per, per);
            var logvar = m.AsSpan(i * 2 * per + per, per);
            for (int k = 0; k < copies; k++)
            {
                int row = (i * copies + k) * per;
                for (int j = 0; j < per; j++)
                {
                    float std = MathF.Exp(0.5f * Math.Clamp(logvar[j], -30f, 20f));
                    z[row + j] = scaling * (mean[j] + std * draw[row + j]);
                }
            }
        }
        return Tensor.FromArray(z, n * copies, c, h, w);
    }

    /// <summary>An 8-bit image as the VAE encoder's input [1, 3, H, W] in [−1, 1].</summary>
    public static Tensor Pixels(RgbImage image) => ImageTensors.ToChw(image).Reshape(1, 3, image.Height, image.Width);
}
