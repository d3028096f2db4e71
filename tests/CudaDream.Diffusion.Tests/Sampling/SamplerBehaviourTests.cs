using CudaDream.Diffusion.Images;
using CudaDream.Diffusion.Sampling;
using CudaDream.Engine;
using CudaDream.Engine.Tensors;
using CudaDream.TestSupport;
using Xunit;

namespace CudaDream.Diffusion.Tests.Sampling;

/// <summary>Seeds, batches, img2img, progress, cancellation and the release of sessions between rounds.</summary>
public sealed class SamplerBehaviourTests
{
    private static GenerationRequest Small(long seed = 7) => new()
    {
        Prompt = "a photo of sks dog",
        NegativePrompt = "blurry",
        Steps = 3,
        Scheduler = "euler-a",
        Seed = seed,
        Width = 64,
        Height = 64,
    };

    private static Sampler Ort(bool keep = false) => Sampler.Create(Fixtures.SdTiny(), new SamplerOptions { Engine = SamplerEngine.Ort, KeepSessionsLoaded = keep });

    private static float[] Row(Tensor t, int i)
    {
        var all = t.ToFloat32Array();
        int per = all.Length / t.Shape[0];
        return all.AsSpan(i * per, per).ToArray();
    }

    /// <summary>Image i of a request has seed + i and comes out the same in a batch of 3 as alone (Euler a draws noise every step).</summary>
    [Fact]
    public void An_image_depends_on_its_seed_not_on_its_batch()
    {
        using var sampler = Ort(keep: true);
        var batch = sampler.Generate(Small() with { BatchSize = 3 });
        Assert.Equal([7L, 8L, 9L], batch.Images.Select(i => i.Seed));
        var alone = sampler.Generate(Small(seed: 8));
        TensorAssert.Close(Row(alone.FinalLatents, 0), Row(batch.FinalLatents, 1), 1e-5, "seed 8 in a batch vs alone");
        Assert.True(TensorAssert.RelativeMaxError(Row(batch.FinalLatents, 0), Row(batch.FinalLatents, 1)) > 0.1);
        var again = sampler.Generate(Small(seed: 8));
        Assert.Equal(alone.FinalLatents.ToFloat32Array(), again.FinalLatents.ToFloat32Array());
    }

    [Fact]
    public void Batch_count_and_size_give_every_image_with_its_parameters()
    {
        using var sampler = Ort();
        var progress = new List<SamplingProgress>();
        var result = sampler.Generate(Small() with { BatchSize = 2, BatchCount = 2 }, new Collect(progress));
        Assert.Equal(4, result.Images.Count);
        Assert.Equal([4, 4, 8, 8], result.FinalLatents.Shape);
        Assert.Equal([4, 64, 64, 3], result.Pixels.Shape);
        Assert.Equal([0, 0, 0, 0, 2, 2, 2, 2], progress.Select(p => p.ImageIndex));
        Assert.Equal([0, 1, 2, 3, 0, 1, 2, 3], progress.Select(p => p.Step));
        Assert.All(progress, p => Assert.Equal((3, 2, 4), (p.TotalSteps, p.BatchSize, p.ImageCount)));
        var text = result.Images[3].Parameters.ToInfotext();
        Assert.Equal("a photo of sks dog\nNegative prompt: blurry\nSteps: 3, Sampler: Euler a, CFG scale: 7.5, Seed: 10, Size: 64x64, Model: sd-tiny, Version: CudaDream", text);
        // The image bytes are the 0..1 pixels rounded as diffusers' numpy_to_pil does.
        var pixels = Row(result.Pixels, 3);
        Assert.Equal(pixels.Select(v => ImageTensors.ToByte(v, PixelRange.ZeroToOne)), result.Images[3].Image.Rgb);
    }

    [Fact]
    public void Img2img_is_seeded_and_strength_decides_how_far_it_goes()
    {
        using var sampler = Ort(keep: true);
        var init = RgbImage.Filled(80, 96, 200, 120, 40); // resized to cover 64x64 and centre-cropped
        var request = Small() with { Scheduler = "ddim", Steps = 10, InitImage = init, Strength = 0.3 };
        var steps = new List<SamplingProgress>();
        var a = sampler.Generate(request, new Collect(steps));
        Assert.Equal(3, steps.Max(p => p.TotalSteps)); // int(10 · 0.3) steps of the schedule's tail
        var b = sampler.Generate(request);
        Assert.Equal(a.FinalLatents.ToFloat32Array(), b.FinalLatents.ToFloat32Array());
        var other = sampler.Generate(request with { Seed = 8 });
        Assert.NotEqual(a.FinalLatents.ToFloat32Array(), other.FinalLatents.ToFloat32Array());
        Assert.Contains("Denoising strength: 0.3", a.Images[0].Parameters.ToInfotext());

        // The less strength, the closer the result stays to the encoded image (one posterior draw, no steps).
        var encoded = sampler.EncodeLatents(LatentCodec.Pixels(ImagePreprocessor.Prepare(init, new ImagePreprocessOptions { Width = 64, Height = 64, Filter = ResampleFilter.Lanczos }, new CropPlacement.Center(), false)),
            new BatchNoise([7], Engine.Randomness.RandomPurpose.LatentSample));
        double Distance(GenerationResult r) => TensorAssert.RelativeMaxError(r.FinalLatents, encoded);
        var strong = sampler.Generate(request with { Strength = 1.0 });
        Assert.True(Distance(a) < Distance(strong), $"strength 0.3: {Distance(a):F3}, strength 1: {Distance(strong):F3}");
    }

    [Fact]
    public void Sessions_are_released_when_a_round_ends()
    {
        using var sampler = Ort();
        sampler.Generate(Small());
        Assert.False(sampler.HasLoadedSessions);
        using var keeping = Ort(keep: true);
        keeping.Generate(Small());
        Assert.True(keeping.HasLoadedSessions);
        keeping.ReleaseSessions();
        Assert.False(keeping.HasLoadedSessions);
    }

    [Fact]
    public void Cancellation_stops_between_steps_and_releases()
    {
        using var sampler = Ort();
        using var cts = new CancellationTokenSource();
        var progress = new Collect([], p => { if (p.Step == 1) cts.Cancel(); });
        Assert.ThrowsAny<OperationCanceledException>(() => sampler.Generate(Small(), progress, cts.Token));
        Assert.False(sampler.HasLoadedSessions);
    }

    [Theory]
    [InlineData(0, 0, "--steps 0")]
    [InlineData(3, -1, "--seed -1")]
    public void Bad_requests_fail_before_a_network_loads(int steps, long seed, string message)
    {
        using var sampler = Ort();
        var e = Assert.Throws<CudaDreamException>(() => sampler.Generate(Small() with { Steps = steps, Seed = seed }));
        Assert.Contains(message, e.Message);
        Assert.False(sampler.HasLoadedSessions);
    }

    [Fact]
    public void Latents_of_the_wrong_shape_are_refused()
    {
        using var sampler = Ort();
        var e = Assert.Throws<CudaDreamException>(() => sampler.Generate(Small() with { BatchSize = 2, InitialLatents = Tensor.Zeros(DType.F32, 1, 4, 8, 8) }));
        Assert.Contains("[2, 4, H/8, W/8]", e.Message);
    }

    private sealed class Collect(List<SamplingProgress> list, Action<SamplingProgress>? also = null) : IProgress<SamplingProgress>
    {
        public void Report(SamplingProgress value)
        {
            list.Add(value);
            also?.Invoke(value);
        }
    }
}
