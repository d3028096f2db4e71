using CudaDream.Engine.Formats;
using CudaDream.TestSupport;
using Xunit;
using Xunit.Abstractions;

namespace CudaDream.Cli.Tests;

/// <summary>[R1] Ctrl-C and SIGTERM stop `sample` and `train` (which keeps a resumable checkpoint), in real child processes.</summary>
[Collection("Console")]
public sealed class InterruptTests(ITestOutputHelper output) : IDisposable
{
    private readonly TempDir _dir = Fixtures.TempDir();

    public void Dispose() => _dir.Dispose();

    public static string Concepts(string name) => Path.Combine(Fixtures.RepoRoot, "models", "tiny-sd", "concepts", name);

    [Theory]
    [InlineData(ChildCli.SigInt)]
    [InlineData(ChildCli.SigTerm)]
    public void Sample_stops_on_a_signal_with_exit_130_and_writes_nothing(int signal)
    {
        var outDir = _dir.File("images");
        using var child = new ChildCli(["sample", "--model", Fixtures.SdTiny(), "--prompt", "x", "--steps", "500", "--scheduler", "euler",
            "--batch-count", "50", "--width", "64", "--height", "64", "--cfg", "1", "--engine", "cudadream", "--seed", "1", "--out", outDir]);
        Assert.True(child.WaitUntil(() => child.Stderr.Contains("engine:"), TimeSpan.FromMinutes(2)), child.Stderr);
        Thread.Sleep(500);
        if (signal == ChildCli.SigInt && ChildCli.InheritsIgnoredSigInt)
        {
            // Started without job control (a background job of a non-interactive shell, nohup): SIGINT is ignored on entry
            // and the child inherits that. The runtime keeps it ignored, as Unix tools do, so the run must go on; then
            // SIGTERM, which nothing ignores, has to stop it the same way.
            child.Signal(signal);
            Thread.Sleep(3000);
            Assert.False(child.HasExited, "an inherited SIG_IGN for SIGINT was not respected");
            Assert.DoesNotContain("stopping", child.Stderr);
            signal = ChildCli.SigTerm;
        }
        child.Signal(signal);
        int code = child.WaitForExit(TimeSpan.FromSeconds(60));
        output.WriteLine(child.Stderr);
        Assert.Equal(130, code);
        Assert.Contains("stopping", child.Stderr);
        Assert.False(Directory.Exists(outDir) && Directory.EnumerateFiles(outDir).Any(), "an interrupted run wrote images");
    }

    [Fact]
    public void Train_on_SIGTERM_writes_a_checkpoint_and_resumes()
    {
        var outDir = _dir.File("run");
        string[] Args(params string[] extra) =>
        [
            "train", "--model", Fixtures.SdTiny(), "--output-dir", outDir, "--resolution", "64", "--max-train-steps", "400", "--learning-rate", "3e-3",
            "--seed", "3", "--checkpoint-every-n-steps", "0", "--sample-engine", "cudadream", "--instance-data-dir", Concepts("teal-rings"),
            "--instance-prompt", "[filewords]", "--instance-token", "zwx", "--n-save-sample", "0", .. extra,
        ];
        using (var child = new ChildCli(Args()))
        {
            Assert.True(child.WaitUntil(() => System.Text.RegularExpressions.Regex.IsMatch(child.Stdout, @"step \d+/400"), TimeSpan.FromMinutes(3)), child.Stdout + child.Stderr);
            child.Signal(ChildCli.SigTerm);
            int code = child.WaitForExit(TimeSpan.FromSeconds(90));
            output.WriteLine(child.Stdout + child.Stderr);
            Assert.Equal(130, code);
            Assert.Contains("interrupted at update", child.Stdout);
        }
        var checkpoint = Assert.Single(Directory.GetDirectories(Path.Combine(outDir, "checkpoints"), "step-*"));
        int update = int.Parse(Path.GetFileName(checkpoint)["step-".Length..]);
        Assert.InRange(update, 1, 399);
        Assert.NotEmpty(SafetensorsFile.ReadAll(Path.Combine(checkpoint, "parameters.safetensors")));
        // The resumed run starts where the interrupted one stopped.
        var (rc, stdout, stderr) = ChildCli.Run(Args("--resume", "--max-train-steps", (update + 1).ToString()), TimeSpan.FromMinutes(3));
        Assert.True(rc == 0, stdout + stderr);
        Assert.Contains($"at update {update}", stdout);
    }
}
