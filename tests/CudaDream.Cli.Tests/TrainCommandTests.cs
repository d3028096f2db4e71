using System.Diagnostics;
using CudaDream.Engine.Formats;
using CudaDream.TestSupport;
using Xunit;
using Xunit.Abstractions;

namespace CudaDream.Cli.Tests;

[Collection("Console")]
public class TrainCommandTests(ITestOutputHelper output)
{
    private static string Concepts(string name) => Path.Combine(Fixtures.RepoRoot, "models", "tiny-sd", "concepts", name);

    private static string[] Args(string outDir, int steps, params string[] extra) =>
        new[]
        {
            "train", "--model", Fixtures.SdTiny(), "--output-dir", outDir, "--resolution", "64", "--max-train-steps", steps.ToString(),
            "--learning-rate", "3e-3", "--seed", "11", "--checkpoint-every-n-steps", "4", "--eval-every-n-steps", "4", "--sample-engine", "cudadream",
            "--instance-data-dir", Concepts("teal-rings"), "--instance-prompt", "[filewords]", "--instance-token", "zwx", "--n-save-sample", "1", "--save-infer-steps", "2",
        }.Concat(extra).ToArray();

    [Fact]
    public void BadFlagsEndWithOneLinePerProblem()
    {
        using var dir = Fixtures.TempDir();
        var outDir = dir.File("out");
        var (code, _, stderr) = CliRunner.Run("train", "--model", dir.File("missing-model"), "--output-dir", outDir, "--learning-rate", "-1",
            "--resolution", "63", "--instance-data-dir", dir.File("no-images"), "--instance-prompt", "x");
        Assert.Equal(1, code);
        var lines = stderr.Trim().Split('\n');
        Assert.Equal(4, lines.Length);
        Assert.All(lines, l => Assert.StartsWith("error: ", l));
        Assert.False(Directory.Exists(outDir));
    }

    [Fact]
    public void MultiPieceTokenGetsAWarning()
    {
        using var dir = Fixtures.TempDir();
        var (code, stdout, stderr) = CliRunner.Run(Args(dir.File("out"), 1, "--instance-token", "zwx_rings", "--checkpoint-every-n-steps", "0"));
        Assert.True(code == 0, stderr);
        Assert.Contains("splits the instance token 'zwx_rings' into 6 pieces: 'z' 'w' 'x' '_' 'r' 'ings'", stdout);
    }

    /// <summary>
    /// [T1] acceptance: a run killed (not asked to stop) after a checkpoint and resumed equals the uninterrupted
    /// run bit for bit. The CLI runs in child processes; the kill is SIGKILL.
    /// </summary>
    [Fact]
    public void KilledRunResumesBitForBit()
    {
        using var dir = Fixtures.TempDir();
        const int steps = 12;
        var straight = dir.File("straight");
        Assert.Equal(0, RunCli(Args(straight, steps), killWhen: null));

        var killed = dir.File("killed");
        var code = RunCli(Args(killed, steps), killWhen: () => Directory.Exists(Path.Combine(killed, "checkpoints", "step-000004")));
        Assert.NotEqual(0, code);
        Assert.False(File.Exists(Path.Combine(killed, "lora.safetensors")), "the run was killed before it finished");
        Assert.Equal(0, RunCli(Args(killed, steps, "--resume"), killWhen: null));

        var a = SafetensorsFile.ReadAll(Path.Combine(straight, "lora.safetensors"));
        var b = SafetensorsFile.ReadAll(Path.Combine(killed, "lora.safetensors"));
        Assert.Equal(a.Keys.OrderBy(k => k), b.Keys.OrderBy(k => k));
        foreach (var (k, t) in a) Assert.True(t.Data.Span.SequenceEqual(b[k].Data.Span), $"{k} differs after resume");
        Assert.Equal(File.ReadAllText(Path.Combine(straight, "loss.csv")), File.ReadAllText(Path.Combine(killed, "loss.csv")));
    }

    private int RunCli(string[] args, Func<bool>? killWhen)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "cudadream.dll"));
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        var deadline = DateTime.UtcNow + TimeSpan.FromMinutes(5);
        while (!p.HasExited)
        {
            if (killWhen != null && killWhen()) { p.Kill(entireProcessTree: true); break; }
            if (DateTime.UtcNow > deadline) { p.Kill(true); throw new TimeoutException("training did not finish in 5 minutes"); }
            Thread.Sleep(20);
        }
        p.WaitForExit();
        output.WriteLine(stdout.Result);
        output.WriteLine(stderr.Result);
        return p.ExitCode;
    }
}
