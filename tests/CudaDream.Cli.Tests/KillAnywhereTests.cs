using CudaDream.Diffusion.Images;
using CudaDream.Diffusion.Training;
using CudaDream.Engine.Formats;
using CudaDream.TestSupport;
using Xunit;
using Xunit.Abstractions;

namespace CudaDream.Cli.Tests;

/// <summary>
/// [R1] Kill anywhere: a real `cudadream train` (prior preservation, class-image generation, caching, steps,
/// checkpoints, sample grids, periodic and final LoRA writes) is SIGKILLed at a seeded point — the N-th time it
/// reaches a kill site (<see cref="FaultInjection.Sites"/>: inside a file write, between a write and its rename,
/// each phase) — then resumed with --resume. After every kill nothing under a final name is half-written (class
/// images, cache entries, sample grids, LoRAs, checkpoints all read back), and the resumed run's LoRA and loss log
/// are byte-identical to an uninterrupted run's.
/// </summary>
[Collection("Console")]
public sealed class KillAnywhereTests(ITestOutputHelper output) : IDisposable
{
    private readonly TempDir _dir = Fixtures.TempDir();

    public void Dispose() => _dir.Dispose();

    /// <summary>Each site with the range of hit counts an 8-update run reaches for certain.</summary>
    private static readonly (string Site, int MaxN)[] Sites =
    [
        ("class-image", 4), ("cache-entry", 8), ("step", 8), ("checkpoint-before-rename", 4), ("sample-grid", 2), ("lora-write", 2),
        ("write-mid", 30), ("write-before-rename", 30),
    ];

    private string[] Args(string outDir, params string[] extra) =>
    [
        "train", "--model", Fixtures.SdTiny(), "--output-dir", outDir, "--resolution", "64", "--max-train-steps", "8", "--seed", "5",
        "--checkpoint-every-n-steps", "2", "--save-every-n-steps", "4", "--sample-every-n-steps", "4", "--eval-every-n-steps", "4",
        "--sample-engine", "cudadream", "--instance-data-dir", InterruptTests.Concepts("teal-rings"), "--instance-prompt", "[filewords]",
        "--instance-token", "zwx", "--class-prompt", "rings", "--num-class-images-per", "1", "--class-infer-steps", "2",
        "--n-save-sample", "1", "--save-infer-steps", "2", .. extra,
    ];

    /// <summary>Three points in the default suite: inside a file write, a checkpoint before its rename, class-image generation.</summary>
    [Fact]
    public void Three_seeded_kill_points_resume_byte_identical() =>
        KillAndResume(seed: 16, points: [("write-mid", 0), ("checkpoint-before-rename", 0), ("class-image", 0)]);

    /// <summary>Twenty seeded points spread over every site (each at least twice).</summary>
    [Fact]
    [Trait("Category", "Slow")]
    public void Twenty_seeded_kill_points_resume_byte_identical() =>
        KillAndResume(seed: 2016, points: Enumerable.Range(0, 20).Select(i => (Sites[i % Sites.Length].Site, 0)).ToArray());

    private void KillAndResume(int seed, (string Site, int N)[] points)
    {
        var random = new Random(seed);
        var straight = _dir.File("straight");
        var (code, _, stderr) = ChildCli.Run(Args(straight), TimeSpan.FromMinutes(3));
        Assert.True(code == 0, stderr);
        var lora = File.ReadAllBytes(Path.Combine(straight, "lora.safetensors"));
        var loss = File.ReadAllText(Path.Combine(straight, "loss.csv"));

        int survived = 0;
        for (int i = 0; i < points.Length; i++)
        {
            var site = points[i].Site;
            int n = points[i].N > 0 ? points[i].N : random.Next(1, Sites.First(s => s.Site == site).MaxN + 1);
            var run = _dir.File($"killed-{i}");
            var env = new Dictionary<string, string> { ["CUDADREAM_FAULTS"] = $"kill:{site}:{n}" };
            var (killedCode, killedOut, killedErr) = ChildCli.Run(Args(run), TimeSpan.FromMinutes(3), env);
            Assert.True(killedCode == 137, $"kill:{site}:{n} was not reached (exit {killedCode}):\n{killedOut}\n{killedErr}");
            AssertNothingHalfWritten(run, $"after kill:{site}:{n}");

            var (resumedCode, resumedOut, resumedErr) = ChildCli.Run(Args(run, "--resume"), TimeSpan.FromMinutes(3));
            Assert.True(resumedCode == 0, $"resume after kill:{site}:{n} failed:\n{resumedOut}\n{resumedErr}");
            AssertNothingHalfWritten(run, $"after resuming kill:{site}:{n}");
            Assert.True(lora.AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(run, "lora.safetensors"))), $"LoRA differs after kill:{site}:{n}");
            Assert.Equal(loss, File.ReadAllText(Path.Combine(run, "loss.csv")));
            output.WriteLine($"kill:{site}:{n}: resumed byte-identical");
            survived++;
            Directory.Delete(run, true);
        }
        output.WriteLine($"{survived}/{points.Length} kill points survived");
    }

    /// <summary>Every file under a final (non-hidden) name reads back whole.</summary>
    private static void AssertNothingHalfWritten(string run, string when)
    {
        if (!Directory.Exists(run)) return;
        foreach (var file in Directory.EnumerateFiles(run, "*", SearchOption.AllDirectories))
        {
            if (Path.GetFileName(file).StartsWith('.') || file.Contains("/.", StringComparison.Ordinal)) continue; // temporary names
            try
            {
                switch (Path.GetExtension(file))
                {
                    case ".png": ImageLoader.Load(file); PngText.Read(file); break;
                    case ".safetensors": SafetensorsFile.ReadAll(file); break;
                    case ".json": System.Text.Json.JsonDocument.Parse(File.ReadAllText(file)).Dispose(); break;
                }
            }
            catch (Exception e) { Assert.Fail($"{when}: {file} is unreadable: {e.Message}"); }
        }
        var checkpoints = new TrainingCheckpoints(run, 3);
        if (Directory.Exists(checkpoints.Directory))
            foreach (var dir in Directory.GetDirectories(checkpoints.Directory, "step-*"))
            {
                try { checkpoints.Load(dir); }
                catch (Exception e) { Assert.Fail($"{when}: checkpoint {dir} is unreadable: {e.Message}"); }
            }
    }
}
