using CudaDream.Diffusion.Benchmarks;
using CudaDream.Diffusion.Training;
using CudaDream.Engine;
using CudaDream.Engine.Formats;
using CudaDream.TestSupport;
using Xunit;
using Xunit.Abstractions;

namespace CudaDream.Diffusion.Tests.Training;

/// <summary>
/// [G1] the training update kept on the device: per update the host stages the batch, replays one captured graph and reads
/// a 48-byte report — nothing else crosses — and the run it trains is the CPU's (accumulation, the text encoder's LoRA,
/// clipping, EMA), resumable bit for bit.
/// </summary>
public class DeviceUpdateTests(ITestOutputHelper output, MixedPrecisionTrainingTests.Model model) : IClassFixture<MixedPrecisionTrainingTests.Model>
{
    private sealed class OnReport(Action<TrainingProgress> action) : IProgress<TrainingProgress>
    {
        public void Report(TrainingProgress value) => action(value);
    }

    [Theory]
    [InlineData("no")]
    [InlineData("bf16")]
    [InlineData("fp16")]
    public void An_update_on_emu_moves_only_the_batch_in_and_the_report_out(string precision)
    {
        var report = Benchmark.Run(new BenchmarkOptions
        {
            Model = model.Path, What = ["train"], Backend = ExecutionBackend.Parse("emu"), MixedPrecision = precision,
            Width = 64, Height = 64, Batch = 2, Updates = 2,
        });
        var counters = report.Results.Single().Device!;
        foreach (var (check, verdict) in counters.Checks)
        {
            output.WriteLine($"{precision} {check}: {verdict}");
            Assert.StartsWith("pass", verdict);
        }
        Assert.True(counters.PerUpdate.Launches > 100 && counters.PerUpdate.Gemms > 100, $"{counters.PerUpdate}");
    }

    private static DreamBoothOptions Run(string dir, string backend) => TrainingFixtures.Run(dir, steps: 4) with
    {
        // SGD with momentum: linear in the gradients, so the backends' rounding differences stay rounding-sized (AdamW divides
        // each gradient by its own magnitude and lifts them; its kernel is checked against the CPU's in EmuOptimizerTests).
        Backend = backend, GradientAccumulationSteps = 2, TrainTextEncoder = true, UseEma = true, MaxGradNorm = 0.05,
        Optimizer = "sgd", SgdMomentum = 0.9, LearningRate = 0.5,
        CheckpointEveryNSteps = 0, EvalEveryNSteps = 2,
    };

    [Fact]
    public void A_device_resident_run_trains_the_cpus_lora_and_resumes_bit_for_bit()
    {
        using var dir = Fixtures.TempDir();
        var cpu = new DreamBoothTrainer(Run(dir.File("cpu"), "cpu")).Run();
        var messages = new List<string>();
        var straight = new DreamBoothTrainer(Run(dir.File("straight"), "emu")).Run(new OnReport(p => { if (p.Message != null) messages.Add(p.Message); }));
        Assert.Contains(messages, m => m.StartsWith("update: on the device", StringComparison.Ordinal));

        // The same arithmetic in another order (the kernels' reductions): the LoRA and its EMA agree to float rounding.
        var a = SafetensorsFile.ReadAll(cpu.LoraPath!);
        var b = SafetensorsFile.ReadAll(straight.LoraPath!);
        Assert.Equal(a.Keys.Order(), b.Keys.Order());
        Assert.Contains(a.Keys, k => k.StartsWith("lora_te_", StringComparison.Ordinal));
        foreach (var (k, t) in a) TensorAssert.Close(t, b[k], 1e-4, k);
        var la = File.ReadAllLines(Path.Combine(cpu.OutputDir, "loss.csv"));
        var lb = File.ReadAllLines(Path.Combine(straight.OutputDir, "loss.csv"));
        Assert.Equal(la.Length, lb.Length);

        using var stop = new CancellationTokenSource();
        var interrupted = new DreamBoothTrainer(Run(dir.File("resumed"), "emu")).Run(new OnReport(p => { if (p.Phase == "training" && p.Step == 2) stop.Cancel(); }), stop.Token);
        Assert.False(interrupted.Completed);
        var resumed = new DreamBoothTrainer(Run(dir.File("resumed"), "emu") with { Resume = true }).Run();
        Assert.True(resumed.Completed);
        var c = SafetensorsFile.ReadAll(resumed.LoraPath!);
        foreach (var (k, t) in b) Assert.True(t.Data.Span.SequenceEqual(c[k].Data.Span), $"{k} differs after resume");
        Assert.Equal(File.ReadAllText(Path.Combine(straight.OutputDir, "loss.csv")), File.ReadAllText(Path.Combine(resumed.OutputDir, "loss.csv")));
        output.WriteLine($"cpu final loss {cpu.LastLoss}, emu {straight.LastLoss}, resumed {resumed.LastLoss}");
    }
}
