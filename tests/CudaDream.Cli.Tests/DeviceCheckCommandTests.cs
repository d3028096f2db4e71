using System.Text.Json;
using CudaDream.Engine.Backends.Cuda.Interop;
using CudaDream.Engine.Ops;
using CudaDream.TestSupport;
using Xunit;

namespace CudaDream.Cli.Tests;

/// <summary>`cudadream device-check`, dry-run on the emulator (no GPU here), and its report summary.</summary>
[Collection("Console")]
public class DeviceCheckCommandTests
{
    [Fact]
    public void KernelMatrixOnTheEmulatorPassesAndWritesBothReports()
    {
        using var dir = Fixtures.TempDir();
        var (code, stdout, stderr) = CliRunner.Run("device-check", "--backend", "emu", "--only", "kernels", "--out", dir.FullName);
        Assert.True(code == 0, stderr + stdout);
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir.FullName, "report.json")));
        var kernels = doc.RootElement.GetProperty("kernels");
        Assert.True(kernels.GetArrayLength() > 100);
        Assert.All(kernels.EnumerateArray(), k => Assert.True(k.GetProperty("passed").GetBoolean(), k.GetProperty("case").GetString()));
        Assert.Equal("emu sm_80", doc.RootElement.GetProperty("device").GetString());
        // sm_80 has bf16 and fp16 tensor cores: the attention cases run again in both (the FlashAttention-2 mma kernels)
        var families = kernels.EnumerateArray().Select(k => k.GetProperty("family").GetString()).ToList();
        Assert.Equal(families.Count(f => f == "attention"), families.Count(f => f == "attention bf16"));
        Assert.Equal(families.Count(f => f == "attention"), families.Count(f => f == "attention f16"));
        var text = File.ReadAllText(Path.Combine(dir.FullName, "report.txt"));
        Assert.Contains("not GPU results", text);
        Assert.Contains("PASSED", text);
    }

    [Fact, Trait("Category", "Slow")]
    public void FullDryRunOnTheEmulatorReproducesEveryFixtureReference()
    {
        using var dir = Fixtures.TempDir();
        var (code, stdout, stderr) = CliRunner.Run("device-check", "--backend", "emu", "--fixtures", Fixtures.SdTiny(""), "--out", dir.FullName);
        Assert.True(code == 0, stderr + stdout);
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir.FullName, "report.json")));
        Assert.Equal(9, doc.RootElement.GetProperty("graphs").GetArrayLength());
        Assert.True(doc.RootElement.GetProperty("passed").GetBoolean());
    }

    [FactWhen(Requirement.NoCudaDriver)]
    public void WithoutADriverTheReportSaysWhy()
    {
        using var dir = Fixtures.TempDir();
        var (code, _, stderr) = CliRunner.Run("device-check", "--backend", "cuda", "--only", "kernels", "--out", dir.FullName);
        Assert.Equal(1, code);
        Assert.Contains("libcuda.so.1", stderr);
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir.FullName, "report.json")));
        Assert.Contains("libcuda.so.1", doc.RootElement.GetProperty("failure").GetString());
        Assert.False(doc.RootElement.GetProperty("passed").GetBoolean());
    }

    /// <summary>The summary reads compute-sanitizer's own "ERROR SUMMARY" lines and exit codes (as device-check.sh leaves them).</summary>
    [Fact]
    public void SummaryFailsOnSanitizerErrors()
    {
        using var dir = Fixtures.TempDir();
        var checks = Path.Combine(dir.FullName, "checks");
        var (code, _, stderr) = CliRunner.Run("device-check", "--backend", "emu", "--only", "kernels", "--out", checks);
        Assert.True(code == 0, stderr);
        File.WriteAllText(Path.Combine(dir.FullName, "sanitizer-memcheck.log"), "========= COMPUTE-SANITIZER\n========= ERROR SUMMARY: 0 errors\n");
        File.WriteAllText(Path.Combine(dir.FullName, "sanitizer-memcheck.rc"), "0\n");
        File.WriteAllText(Path.Combine(dir.FullName, "sanitizer-racecheck.log"), "========= RACECHECK SUMMARY: 3 hazards displayed\n========= ERROR SUMMARY: 3 errors\n");
        File.WriteAllText(Path.Combine(dir.FullName, "sanitizer-racecheck.rc"), "99\n");
        File.WriteAllText(Path.Combine(dir.FullName, "sanitizer-synccheck.log"), "compute-sanitizer not found: synccheck skipped\n");
        var (sumCode, stdout, _) = CliRunner.Run("device-check", "--summarize", "--out", dir.FullName);
        Assert.Equal(1, sumCode);
        Assert.Contains("racecheck  exit 99, 3 errors", stdout);
        Assert.Contains("memcheck   exit 0, 0 errors", stdout);
        Assert.Contains("compute-sanitizer not found", stdout);
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir.FullName, "report.json")));
        Assert.False(doc.RootElement.GetProperty("passed").GetBoolean());
        Assert.True(doc.RootElement.GetProperty("report").GetProperty("passed").GetBoolean());
    }
}
