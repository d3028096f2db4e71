using CudaDream.Diffusion.Images;
using CudaDream.Diffusion.Models;
using CudaDream.Diffusion.Sampling;
using CudaDream.Diffusion.Training;
using CudaDream.TestSupport;
using Xunit;

namespace CudaDream.Diffusion.Tests.Training;

public class TrainingCacheTests
{
    private static string Image => Path.Combine(TrainingFixtures.Concepts("teal-rings"), "rings_01.jpg");

    /// <summary>Mean latents are the VAE posterior mean × scaling factor, as diffusers' encoder computes it (here through the sampler's encoder).</summary>
    [Fact]
    public void MeanLatentIsThePosteriorMeanTimesTheScale()
    {
        using var dir = Fixtures.TempDir();
        var model = ModelFolder.Open(Fixtures.SdTiny());
        using var cache = new TrainingCache(dir.FullName, model, clipSkip: 1);
        var latent = cache.Latent(Image, 64, 64, new CropPlacement.Center(), flip: false).ToFloat32Array();
        using var sampler = Sampler.Create(model, new SamplerOptions { Engine = SamplerEngine.Ort });
        var pixels = ImagePreprocessor.ToTrainingTensor(ImageLoader.Load(Image), new ImagePreprocessOptions { Width = 64, Height = 64 }, new CropPlacement.Center(), false);
        var moments = sampler.EncodeMoments(pixels.Reshape(1, 3, 64, 64)).ToFloat32Array();
        var expected = moments.Take(latent.Length).Select(m => m * model.LatentScale).ToArray();
        TensorAssert.Close(expected, latent, 1e-4, "mean latent");
        // A second cache over the same folder reuses the file.
        using var again = new TrainingCache(dir.FullName, model, clipSkip: 1);
        again.Latent(Image, 64, 64, new CropPlacement.Center(), flip: false);
        Assert.Equal(1, again.Hits);
    }

    /// <summary>Sampled latents are mean + std·ε with ε seeded: reproducible per seed, different across seeds, centred on the mean.</summary>
    [Fact]
    public void SampledLatentsAreSeededDrawsAroundTheMean()
    {
        using var dir = Fixtures.TempDir();
        var model = ModelFolder.Open(Fixtures.SdTiny());
        float[] Draw(string sub, bool sample, ulong seed)
        {
            using var cache = new TrainingCache(dir.File(sub), model, 1, sample, seed);
            return cache.Latent(Image, 64, 64, new CropPlacement.Center(), false).ToFloat32Array();
        }
        var mean = Draw("m", false, 0);
        var a = Draw("a", true, 5);
        var b = Draw("b", true, 5);
        var c = Draw("c", true, 6);
        Assert.Equal(a, b);
        Assert.NotEqual(a, c);
        var residual = a.Zip(mean, (x, m) => (double)(x - m)).ToArray();
        double mu = residual.Average(), sd = Math.Sqrt(residual.Select(r => (r - mu) * (r - mu)).Average());
        Assert.True(sd > 0);
        Assert.True(Math.Abs(mu) < 4 * sd / Math.Sqrt(residual.Length), $"residual mean {mu} for sd {sd}");
    }
}
