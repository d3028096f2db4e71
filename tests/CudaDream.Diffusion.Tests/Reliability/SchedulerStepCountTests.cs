using CudaDream.Diffusion.Schedulers;
using CudaDream.Engine;
using CudaDream.Engine.Randomness;
using Xunit;

namespace CudaDream.Diffusion.Tests.Reliability;

/// <summary>
/// [R1] `sample --steps 1000` (the advertised maximum) crashed inside PNDM, DDIM and DDPM when the scheduler has
/// steps_offset 1: "leading" spacing put a timestep at 1000, past ᾱ's last index. Every scheduler, spacing, offset
/// and step count a config or flag can ask for must either run its whole schedule or refuse with a user error
/// (CudaDreamException) before anything runs; diffusers itself indexes past the end here (IndexError).
/// </summary>
public class SchedulerStepCountTests
{
    private sealed class ZeroNoise : INoiseSource
    {
        public void Fill(Span<float> destination) => destination.Clear();
    }

    public static IEnumerable<object[]> Cases()
    {
        foreach (var name in SchedulerFactory.Names)
            foreach (var spacing in new[] { "leading", "linspace", "trailing" })
                foreach (var offset in new[] { 0, 1, 7, 999 })
                    yield return new object[] { name, spacing, offset };
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Every_step_count_runs_or_is_refused_as_a_user_error(string name, string spacing, int offset)
    {
        var config = SchedulerConfig.StableDiffusion15 with { TimestepSpacing = spacing, StepsOffset = offset };
        foreach (int steps in new[] { 1, 2, 3, 499, 500, 501, 998, 999, 1000 })
        {
            var scheduler = SchedulerFactory.Create(name, config);
            try { scheduler.SetTimesteps(steps); }
            catch (CudaDreamException e)
            {
                Assert.Contains("steps", e.Message);
                continue;
            }
            var sample = new float[8];
            var output = new float[8];
            sample.AsSpan().Fill(0.5f);
            foreach (var t in scheduler.Timesteps.ToArray())
            {
                scheduler.ScaleModelInput(sample, t, output);
                scheduler.Step(output, t, sample, new ZeroNoise());
            }
            Assert.All(sample, v => Assert.True(float.IsFinite(v), $"{name} {spacing} offset {offset}, {steps} steps: {v}"));
        }
    }

    [Theory]
    [InlineData("pndm")]
    [InlineData("ddim")]
    [InlineData("ddpm")]
    public void Sd15_config_with_1000_steps_names_the_largest_count_that_fits(string name)
    {
        var scheduler = SchedulerFactory.Create(name, SchedulerConfig.StableDiffusion15);
        var e = Assert.Throws<CudaDreamException>(() => scheduler.SetTimesteps(1000));
        Assert.Contains("reach timestep 1000", e.Message);
        Assert.Contains("the nearest smaller step count that fits is 999 steps", e.Message);
        scheduler.SetTimesteps(999);
        Assert.Equal(999, scheduler.Timesteps.Max());
    }
}
