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
    /// img2img start latents: z = scaling · (μ + σ·n) per image (diffusers' DiagonalGaussianDistribution.sample,
    /// log-variance clamped to [−30, 20]), with n from <paramref name="posteriorNoise"/>. The image is encoded once.
    /// </summary>
    public static float[] EncodeImage(IPipelineEngine engine, RgbImage image, int count, int latentChannels, float scaling, INoiseSource posteriorNoise)
    {
        var pixels = ImageTensors.ToChw(image);
        var moments = engine.EncodeMoments(pixels.Reshape(1, 3, image.Height, image.Width));
        if (moments.Rank != 4 || moments.Shape[1] != 2 * latentChannels)
            throw new Engine.CudaDreamException($"the VAE encoder returned {moments}, expected [1, {2 * latentChannels}, h, w]");
        var m = moments.ReadOnlySpan<float>();
        int per = m.Length / 2;
        var noise = new float[count * per];
        posteriorNoise.Fill(noise);
        var latents = new float[count * per];
        for (int i = 0; i < count; i++)
            for (int j = 0; j < per; j++)
            {
                float logvar = Math.Clamp(m[per + j], -30f, 20f);
                float std = MathF.Exp(0.5f * logvar);
                latents[i * per + j] = scaling * (m[j] + std * noise[i * per + j]);
            }
        return latents;
    }
}
