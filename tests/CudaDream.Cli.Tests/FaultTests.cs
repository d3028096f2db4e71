using System.Diagnostics;
using CudaDream.Diffusion.Training;
using CudaDream.TestSupport;
using Xunit;
using Xunit.Abstractions;

namespace CudaDream.Cli.Tests;

/// <summary>
/// [R1] Faults during a real `cudadream train`: a full disk, a read-only file system, the output folder deleted, an
/// instance image deleted, a NaN gradient. Each ends with one clear error line and a non-zero exit; where the disk
/// still holds the output folder the last good checkpoint reads back and a --resume finishes byte-identical to an
/// uninterrupted run. Disk full and read-only come from the CUDADREAM_FAULTS seam (the errno the OS would give), and
/// additionally from a real 400 KiB tmpfs (remounted read-only mid-run) where this machine lets the test mount one.
/// </summary>
[Collection("Console")]
public sealed class FaultTests(ITestOutputHelper output) : IDisposable
{
    private readonly TempDir _dir = Fixtures.TempDir();
    private static readonly TimeSpan Limit = TimeSpan.FromMinutes(3);

    public void Dispose() => _dir.Dispose();

    private static string[] Args(string outDir, string? images = null, int steps = 8, params string[] extra) =>
    [
        "train", "--model", Fixtures.SdTiny(), "--output-dir", outDir, "--resolution", "64", "--max-train-steps", steps.ToString(), "--seed", "5",
        "--checkpoint-every-n-steps", "2", "--eval-every-n-steps", "4", "--sample-engine", "cudadream",
        "--instance-data-dir", images ?? InterruptTests.Concepts("teal-rings"), "--instance-prompt", "[filewords]", "--instance-token", "zwx", "--n-save-sample", "0", .. extra,
    ];

    private byte[] StraightLora()
    {
        var straight = _dir.File("straight");
        var (code, _, stderr) = ChildCli.Run(Args(straight), Limit);
        Assert.True(code == 0, stderr);
        return File.ReadAllBytes(Path.Combine(straight, "lora.safetensors"));
    }

    /// <summary>One "error: " line (warnings and notices go to stdout), naming <paramref name="contains"/>.</summary>
    private string AssertOneErrorLine(int code, string stderr, params string[] contains)
    {
        output.WriteLine(stderr);
        Assert.Equal(1, code);
        var errors = stderr.Trim().Split('\n').Where(l => l.Length > 0).ToArray();
        Assert.True(errors.Length == 1, stderr);
        Assert.StartsWith("error: ", errors[0]);
        Assert.DoesNotContain("internal error", errors[0]);
        foreach (var c in contains) Assert.Contains(c, errors[0]);
        return errors[0];
    }

    /// <summary>No hidden temporary checkpoint is left, every checkpoint loads, and --resume finishes byte-identical.</summary>
    private void AssertIntactAndResumable(string run, byte[] straightLora, string expectLatest)
    {
        var checkpoints = new TrainingCheckpoints(run, 3);
        Assert.Empty(Directory.GetDirectories(checkpoints.Directory, ".*"));
        Assert.Equal(expectLatest, Path.GetFileName(checkpoints.Latest()));
        foreach (var dir in Directory.GetDirectories(checkpoints.Directory, "step-*")) checkpoints.Load(dir);
        var (code, stdout, stderr) = ChildCli.Run(Args(run, extra: "--resume"), Limit);
        Assert.True(code == 0, stdout + stderr);
        Assert.Equal(straightLora, File.ReadAllBytes(Path.Combine(run, "lora.safetensors")));
    }

    [Theory]
    [InlineData("ENOSPC", "no space left on the device")]
    [InlineData("EROFS", "the file system is read-only")]
    public void A_full_or_read_only_disk_at_the_second_checkpoint_keeps_the_first(string errno, string reason)
    {
        var lora = StraightLora();
        var run = _dir.File("run");
        // Each checkpoint writes three files: the 4th write under checkpoints/ is the second checkpoint's first.
        var env = new Dictionary<string, string> { ["CUDADREAM_FAULTS"] = $"write:{errno}:/checkpoints/:4" };
        var (code, _, stderr) = ChildCli.Run(Args(run), Limit, env);
        AssertOneErrorLine(code, stderr, reason, "step-000004", "training stopped at update 4", "the last good checkpoint is", "step-000002", "--resume");
        AssertIntactAndResumable(run, lora, "step-000002");
    }

    [Fact]
    public void A_full_disk_for_every_file_fails_in_one_line_before_training()
    {
        var run = _dir.File("run");
        var env = new Dictionary<string, string> { ["CUDADREAM_FAULTS"] = "write:ENOSPC:/:1" };
        var (code, _, stderr) = ChildCli.Run(Args(run), Limit, env);
        AssertOneErrorLine(code, stderr, "config.json: cannot write: no space left on the device");
    }

    [Fact]
    public void A_nan_gradient_stops_before_the_weights_and_the_last_checkpoint_resumes()
    {
        var lora = StraightLora();
        var run = _dir.File("run");
        var env = new Dictionary<string, string> { ["CUDADREAM_FAULTS"] = "nan-gradient:5" };
        var (code, _, stderr) = ChildCli.Run(Args(run), Limit, env);
        AssertOneErrorLine(code, stderr, "the gradient norm became NaN at update 5", "step-000004");
        AssertIntactAndResumable(run, lora, "step-000004");
    }

    [Fact]
    public void Deleting_the_output_folder_mid_run_ends_with_one_line()
    {
        var run = _dir.File("run");
        using var child = new ChildCli(Args(run, steps: 5000, extra: ["--checkpoint-every-n-steps", "0"]));
        Assert.True(child.WaitUntil(() => System.Text.RegularExpressions.Regex.IsMatch(child.Stdout, @"step \d+/"), Limit), child.Stdout + child.Stderr);
        Directory.Delete(run, recursive: true);
        int code = child.WaitForExit(Limit);
        AssertOneErrorLine(code, child.Stderr, "the output folder is gone");
    }

    [Fact]
    public void Deleting_an_instance_image_mid_run_ends_with_one_line_and_a_checkpoint()
    {
        var images = _dir.File("images");
        Directory.CreateDirectory(images);
        foreach (var f in Directory.GetFiles(InterruptTests.Concepts("teal-rings"))) File.Copy(f, Path.Combine(images, Path.GetFileName(f)));
        var run = _dir.File("run");
        using var child = new ChildCli(Args(run, images, steps: 5000, extra: ["--checkpoint-every-n-steps", "0"]));
        Assert.True(child.WaitUntil(() => System.Text.RegularExpressions.Regex.IsMatch(child.Stdout, @"step \d+/"), Limit), child.Stdout + child.Stderr);
        var victim = Directory.GetFiles(images, "*.jpg").Order().First();
        File.Delete(victim);
        int code = child.WaitForExit(Limit);
        AssertOneErrorLine(code, child.Stderr, victim, "wrote", "continue with --resume");
        var latest = new TrainingCheckpoints(run, 3).Latest();
        Assert.NotNull(latest);
        new TrainingCheckpoints(run, 3).Load(latest!);
    }

    /// <summary>A real small file system: full mid-run, then remounted read-only mid-run (root only; the seam tests above cover the rest).</summary>
    [FactWhen(Requirement.MountTmpfs)]
    public void A_real_tmpfs_full_or_read_only_mid_run()
    {
        var mount = _dir.File("tmpfs");
        Directory.CreateDirectory(mount);
        Assert.True(Mount($"-t tmpfs -o size=400k tmpfs {mount}"), "mounting the tmpfs");
        try
        {
            // Full: the optimizer state of the first checkpoint does not fit in 400 KiB after the cache.
            var full = Path.Combine(mount, "run");
            var (code, _, stderr) = ChildCli.Run(Args(full, extra: ["--lora-targets", "kohya"]), Limit);
            AssertOneErrorLine(code, stderr, "no space left on the device", "training stopped at update 2");
            Assert.Empty(Directory.GetDirectories(Path.Combine(full, "checkpoints")));
            Directory.Delete(full, true);

            // Read-only: remounted while training.
            var ro = Path.Combine(mount, "ro");
            using var child = new ChildCli(Args(ro, steps: 5000, extra: ["--checkpoint-every-n-steps", "0", "--eval-every-n-steps", "1"]));
            Assert.True(child.WaitUntil(() => System.Text.RegularExpressions.Regex.IsMatch(child.Stdout, @"step \d+/"), Limit), child.Stdout + child.Stderr);
            Assert.True(Mount($"-o remount,ro {mount}"), "remount read-only failed");
            code = child.WaitForExit(Limit);
            AssertOneErrorLine(code, child.Stderr, "read-only");
        }
        finally
        {
            Mount($"-o remount,rw {mount}");
            Process.Start("umount", mount).WaitForExit();
        }
    }

    private static bool Mount(string args)
    {
        try
        {
            using var p = Process.Start(new ProcessStartInfo("mount") { Arguments = args, RedirectStandardError = true, RedirectStandardOutput = true })!;
            p.WaitForExit();
            return p.ExitCode == 0;
        }
        catch (System.ComponentModel.Win32Exception) { return false; }
    }
}
