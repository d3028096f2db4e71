using System.Diagnostics;
using CudaDream.Engine.Training.Lora;
using static TorchSharp.torch;
using Tensor = TorchSharp.torch.Tensor;

namespace CudaDream.TorchBench;

/// <summary>One timed measurement: its name and the median of the timed runs.</summary>
public sealed record TimedResult(string Name, double MedianSeconds);

/// <summary>
/// The work CudaDream's <c>bench</c> times on the CPU (Benchmark.Forward and Benchmark.TrainStep), done by libtorch:
/// "unet forward" = one UNet forward at batch B under inference mode; "lora train step" = rank-4 LoRA (alpha 4) on
/// the "attention" modules, frozen base weights, forward + MSE against a random target + backward, no optimizer step.
/// Inputs as CudaDream's: random latents [B, in_channels, size/8, size/8], timestep 500, 77 random text tokens of
/// width cross_attention_dim. Each is one warm-up run, then the median of <c>repeats</c> timed runs.
/// </summary>
public static class TorchBenchmark
{
    public const string ForwardName = "unet forward";
    public const string TrainStepName = "lora train step";
    public const int TextTokens = 77;
    public const float Timestep = 500;
    public const int LoraRank = 4;
    public const float LoraAlpha = 4;
    /// <summary>CudaDream's bench initialises its adapters with this seed (GraphLora.Initialize).</summary>
    public const ulong LoraSeed = 1;

    public sealed record Inputs(Tensor Sample, Tensor Timestep, Tensor EncoderHiddenStates, Tensor Target) : IDisposable
    {
        public void Dispose()
        {
            Sample.Dispose();
            Timestep.Dispose();
            EncoderHiddenStates.Dispose();
            Target.Dispose();
        }
    }

    /// <summary>Random inputs for batch <paramref name="batch"/> at <paramref name="size"/> pixels (seeded, so runs compare).</summary>
    public static Inputs RandomInputs(ReferenceUNet unet, int batch, int size)
    {
        var c = unet.Config;
        var generator = new Generator(10);
        long latent = size / 8;
        return new Inputs(
            randn([batch, c.InChannels, latent, latent], generator: generator),
            full([batch], Timestep),
            randn([batch, TextTokens, c.CrossAttentionDim], generator: generator),
            randn([batch, c.OutChannels, latent, latent], generator: generator));
    }

    public static TimedResult Forward(ReferenceUNet unet, Inputs inputs, int repeats)
    {
        double t = Median(repeats, () =>
        {
            using var scope = NewDisposeScope();
            using var _ = inference_mode();
            var start = Stopwatch.GetTimestamp();
            unet.Model.forward(inputs.Sample, inputs.Timestep, inputs.EncoderHiddenStates);
            return Stopwatch.GetElapsedTime(start).TotalSeconds;
        });
        return new TimedResult(ForwardName, t);
    }

    /// <summary>Attaches CudaDream's rank-4 attention LoRA to <paramref name="unet"/> (for good) and times the step.</summary>
    public static TimedResult LoraTrainStep(ReferenceUNet unet, Inputs inputs, int repeats)
    {
        unet.AttachLora(LoraStep.AttentionAdapters(unet, LoraRank, LoraAlpha, LoraSeed));
        double t = Median(repeats, () =>
        {
            unet.Model.zero_grad(); // the step's own gradients only; clearing them is not part of the measured work
            var start = Stopwatch.GetTimestamp();
            LoraStep.Run(unet.Model, inputs.Sample, inputs.Timestep, inputs.EncoderHiddenStates, inputs.Target);
            return Stopwatch.GetElapsedTime(start).TotalSeconds;
        });
        return new TimedResult(TrainStepName, t);
    }

    /// <summary>One warm-up run (first-touch allocations, oneDNN primitive creation), then the median of the timed runs.</summary>
    private static double Median(int repeats, Func<double> run)
    {
        run();
        var times = Enumerable.Range(0, repeats).Select(_ => run()).OrderBy(x => x).ToList();
        return times[times.Count / 2];
    }

    /// <summary>Peak resident memory: VmHWM of /proc/self/status on Linux, the process's peak working set elsewhere.</summary>
    public static long PeakResidentBytes()
    {
        const string status = "/proc/self/status";
        if (File.Exists(status))
        {
            foreach (var line in File.ReadLines(status))
            {
                if (!line.StartsWith("VmHWM:", StringComparison.Ordinal)) continue;
                var parts = line["VmHWM:".Length..].Trim().Split(' ', StringSplitOptions.RemoveEmptyEntries);
                if (parts.Length == 2 && parts[1] == "kB" && long.TryParse(parts[0], out long kb)) return kb * 1024;
            }
        }
        using var self = Process.GetCurrentProcess();
        return self.PeakWorkingSet64;
    }
}
