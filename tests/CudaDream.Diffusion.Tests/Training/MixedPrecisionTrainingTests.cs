using System.Globalization;
using CudaDream.Diffusion.Models.Import;
using CudaDream.Diffusion.Training;
using CudaDream.Engine.Formats;
using CudaDream.TestSupport;
using Xunit;
using Xunit.Abstractions;

namespace CudaDream.Diffusion.Tests.Training;

/// <summary>
/// [G1] mixed precision on the emulated CUDA backend against the CPU's fp32 (the oracle): the quick start's run in bf16 and in
/// fp16 (dynamic loss scaling) follows the fp32 loss curve within 2%, and the first update's LoRA gradients point where the
/// CPU's do (cosine ≥ 0.999, DESIGN.md).
/// </summary>
public class MixedPrecisionTrainingTests(ITestOutputHelper output, MixedPrecisionTrainingTests.Model model) : IClassFixture<MixedPrecisionTrainingTests.Model>
{
    /// <summary>The embedded model as ./build.sh makes it: the sd-tiny checkpoint imported into CudaDream's own graphs.</summary>
    public sealed class Model : IDisposable
    {
        private readonly TempDir _dir = Fixtures.TempDir();
        public string Path { get; }

        public Model()
        {
            Path = _dir.File("tiny-sd");
            CheckpointImporter.Import(Fixtures.SdTiny("checkpoint.safetensors"), Path,
                new ImportOptions { TokenizerDir = Fixtures.SdTiny("tokenizer"), ConfigDir = Fixtures.SdTiny("configs") });
        }

        public string Run(string name) => _dir.File(name);

        private readonly Dictionary<string, TrainingResult> _references = new();

        /// <summary>The fp32 CPU run of <paramref name="key"/>, trained once for every test that compares with it.</summary>
        public TrainingResult Reference(string key, Func<TrainingResult> train)
        {
            lock (_references)
            {
                if (!_references.TryGetValue(key, out var r)) _references[key] = r = train();
                return r;
            }
        }
        public void Dispose() => _dir.Dispose();
    }

    private readonly Model _model = model;

    private static readonly string QuickStart = System.IO.Path.Combine(Fixtures.RepoRoot, "models", "tiny-sd", "quickstart.json");

    private DreamBoothOptions QuickStartOptions(string run, string backend, string precision, int steps, params string[] more)
    {
        string[] flags = ["--model", _model.Path, "--output-dir", _model.Run(run), "--backend", backend, "--mixed-precision", precision,
            "--max-train-steps", steps.ToString(CultureInfo.InvariantCulture), "--sample-every-n-steps", "0", "--checkpoint-every-n-steps", "0", .. more];
        return DreamBoothConfig.Load(QuickStart, flags).Options;
    }

    private static List<(int Step, double Loss)> Losses(string outputDir) =>
        File.ReadAllLines(System.IO.Path.Combine(outputDir, "loss.csv")).Skip(1)
            .Select(l => l.Split(','))
            .Select(f => (int.Parse(f[0], CultureInfo.InvariantCulture), double.Parse(f[1], CultureInfo.InvariantCulture))).ToList();

    private void LossCurveTracksTheCpu(string precision, int steps)
    {
        var cpu = _model.Reference($"cpu-{steps}", () => new DreamBoothTrainer(QuickStartOptions($"cpu-{steps}", "cpu", "no", steps)).Run());
        var mixed = new DreamBoothTrainer(QuickStartOptions($"emu-{precision}-{steps}", "emu", precision, steps)).Run();
        Assert.True(mixed.Completed);
        var a = Losses(cpu.OutputDir);
        var b = Losses(mixed.OutputDir);
        Assert.Equal(a.Select(x => x.Step), b.Select(x => x.Step));
        double worst = 0;
        for (int i = 0; i < a.Count; i++) worst = Math.Max(worst, Math.Abs(b[i].Loss - a[i].Loss) / a[i].Loss);
        for (int i = 0; i < cpu.EvalLosses.Count; i++)
            worst = Math.Max(worst, Math.Abs(mixed.EvalLosses[i].Loss - cpu.EvalLosses[i].Loss) / cpu.EvalLosses[i].Loss);
        output.WriteLine($"{precision}, {steps} updates: worst relative loss difference to fp32 {worst:P3}");
        Assert.True(worst <= 0.02, $"{precision} loss differs from fp32 by {worst:P2} (> 2%)");
        foreach (var (key, t) in SafetensorsFile.ReadAll(mixed.LoraPath!))
            Assert.True(t.ToFloat64Array().All(double.IsFinite), $"{key} is not finite");
    }

    [Theory]
    [InlineData("bf16")]
    [InlineData("fp16")]
    public void Quick_start_in_mixed_precision_tracks_the_fp32_loss_curve(string precision) => LossCurveTracksTheCpu(precision, 10);

    [Theory, Trait("Category", "Slow")]
    [InlineData("bf16")]
    [InlineData("fp16")]
    public void Whole_quick_start_in_mixed_precision_tracks_the_fp32_loss_curve(string precision) => LossCurveTracksTheCpu(precision, 60);

    /// <summary>
    /// One SGD update at learning rate 1 writes −g into each LoRA up matrix (they start at zero; the down matrices' gradients
    /// are then exactly zero), so the LoRA after one update is the first update's gradient, in fp32 masters on every backend.
    /// </summary>
    [Theory]
    [InlineData("bf16")]
    [InlineData("fp16")]
    public void First_update_gradients_point_where_the_fp32_ones_do(string precision)
    {
        string[] sgd = ["--optimizer", "sgd", "--sgd-momentum", "0", "--learning-rate", "1", "--lr-scheduler", "constant", "--lr-warmup-steps", "0",
            "--max-grad-norm", "0", "--adam-weight-decay", "0"];
        var cpu = _model.Reference("grad-cpu", () => new DreamBoothTrainer(QuickStartOptions("grad-cpu", "cpu", "no", 1, sgd)).Run());
        var mixed = new DreamBoothTrainer(QuickStartOptions($"grad-{precision}", "emu", precision, 1, sgd)).Run();
        var a = SafetensorsFile.ReadAll(cpu.LoraPath!);
        var b = SafetensorsFile.ReadAll(mixed.LoraPath!);
        double dot = 0, aa = 0, bb = 0, worstTensor = 1;
        foreach (var key in a.Keys.Where(k => k.EndsWith(".lora_up.weight", StringComparison.Ordinal)))
        {
            var x = a[key].ToFloat64Array();
            var y = b[key].ToFloat64Array();
            double d = 0, xx = 0, yy = 0;
            for (int i = 0; i < x.Length; i++) { d += x[i] * y[i]; xx += x[i] * x[i]; yy += y[i] * y[i]; }
            dot += d; aa += xx; bb += yy;
            if (xx > 0) worstTensor = Math.Min(worstTensor, d / Math.Sqrt(xx * yy));
        }
        double cosine = dot / Math.Sqrt(aa * bb);
        output.WriteLine($"{precision}: cosine of the first update's LoRA gradients to fp32 {cosine:F6} (worst tensor {worstTensor:F6})");
        Assert.True(aa > 0, "the CPU's first update changed nothing");
        Assert.True(cosine >= 0.999, $"{precision} gradient cosine {cosine:F6} < 0.999");
    }
}
