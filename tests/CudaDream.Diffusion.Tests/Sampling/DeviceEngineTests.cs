using CudaDream.Diffusion.Models;
using CudaDream.Diffusion.Sampling;
using CudaDream.Engine;
using CudaDream.Engine.Tensors;
using CudaDream.TestSupport;
using Xunit;
using Xunit.Abstractions;

namespace CudaDream.Diffusion.Tests.Sampling;

/// <summary>CudaDream's engine samples on a kernel device (here the emulator) the images it samples on the CPU, in fp32 and in bf16.</summary>
public class DeviceEngineTests(ITestOutputHelper output)
{
    private static (byte[] Pixels, string Engine) Generate(ExecutionBackend backend, DType compute)
    {
        var lines = new List<string>();
        using var sampler = Sampler.Create(ModelFolder.Open(Fixtures.SdTiny()), new SamplerOptions
        {
            Engine = SamplerEngine.CudaDream, Backend = backend, Compute = compute, Log = lines.Add,
        });
        var result = sampler.Generate(new GenerationRequest { Prompt = "a red square", Steps = 3, CfgScale = 1, Width = 64, Height = 64, Seed = 11, Scheduler = "ddim" });
        return (result.Images.Single().Image.Rgb, lines.Single(l => l.StartsWith("engine:", StringComparison.Ordinal)));
    }

    private static (double Mean, int Max) PixelDifference(byte[] a, byte[] b)
    {
        long sum = 0;
        int max = 0;
        for (int i = 0; i < a.Length; i++)
        {
            int d = Math.Abs(a[i] - b[i]);
            sum += d;
            max = Math.Max(max, d);
        }
        return ((double)sum / a.Length, max);
    }

    [Fact]
    public void The_engine_on_emu_draws_the_cpu_engines_image()
    {
        var (cpu, cpuLine) = Generate(ExecutionBackend.Cpu, DType.F32);
        var (emu, emuLine) = Generate(ExecutionBackend.Parse("emu"), DType.F32);
        var (bf16, bf16Line) = Generate(ExecutionBackend.Parse("emu"), DType.BF16);
        Assert.Contains("CPU backend", cpuLine);
        Assert.Contains("emu backend", emuLine);
        Assert.Contains("bf16", bf16Line);
        var fp32 = PixelDifference(cpu, emu);
        var reduced = PixelDifference(cpu, bf16);
        output.WriteLine($"emu fp32 vs cpu: mean {fp32.Mean:F3}, max {fp32.Max}; emu bf16 vs cpu: mean {reduced.Mean:F3}, max {reduced.Max} (of 255)");
        Assert.True(fp32.Max <= 1, $"fp32 on emu differs by up to {fp32.Max}/255");
        Assert.True(reduced.Mean <= 3, $"bf16 on emu differs by {reduced.Mean:F2}/255 on average");
    }
}
