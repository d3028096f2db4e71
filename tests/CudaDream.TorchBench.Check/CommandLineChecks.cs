using System.Text.Json;
using CudaDream.TestSupport;
using Xunit;

namespace CudaDream.TorchBench.Check;

/// <summary>The command line and JSON that `cudadream bench --compare` relies on.</summary>
public sealed class CommandLineChecks
{
    private static (int Code, string Out, string Error) Run(params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int code = TorchBenchProgram.Run(args, stdout, stderr);
        return (code, stdout.ToString(), stderr.ToString());
    }

    [Fact]
    public void ARunOnTheFixtureVerifiesThenWritesTheReport()
    {
        using var dir = Fixtures.TempDir();
        var json = dir.File("torch.json");
        var (code, output, error) = Run("--model", Fixtures.SdTiny(), "--batch", "1", "--size", "64", "--repeats", "1", "--threads", "1", "--json", json);
        Assert.True(code == 0, error);
        using var doc = JsonDocument.Parse(File.ReadAllText(json));
        var root = doc.RootElement;
        Assert.Equal("libtorch 2.10.0 (TorchSharp 0.107.0)", root.GetProperty("library").GetString());
        Assert.Equal(1, root.GetProperty("threads").GetInt32());
        var verified = root.GetProperty("verified");
        Assert.Equal(Fixtures.SdTiny("refs/unet.safetensors"), verified.GetProperty("reference").GetString());
        Assert.True(verified.GetProperty("passed").GetBoolean());
        Assert.InRange(verified.GetProperty("max_abs_error").GetDouble(), 0, 1e-4 * verified.GetProperty("max_abs_reference").GetDouble());
        var results = root.GetProperty("results").EnumerateArray().ToList();
        Assert.Equal(["unet forward", "lora train step"], results.Select(r => r.GetProperty("name").GetString()));
        Assert.All(results, r => Assert.True(r.GetProperty("median_seconds").GetDouble() > 0));
        Assert.Equal(JsonValueKind.Null, results[0].GetProperty("gflop_per_s").ValueKind);
        Assert.True(root.GetProperty("peak_rss_bytes").GetInt64() > 0);
        Assert.Contains("unet forward", output);
        Assert.Empty(Directory.GetFiles(dir.FullName, "*.tmp", SearchOption.AllDirectories)); // written by temp + rename
    }

    [Fact]
    public void AFailedVerificationRefusesToTime()
    {
        using var dir = Fixtures.TempDir();
        var changed = ReferenceUNetChecks.WithChangedOutput(dir, relativeChange: 1e-2);
        var json = dir.File("torch.json");
        var (code, _, error) = Run("--model", Fixtures.SdTiny(), "--batch", "1", "--size", "64", "--repeats", "1", "--verify", changed, "--json", json);
        Assert.Equal(1, code);
        Assert.False(File.Exists(json));
        var line = Assert.Single(error.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith($"cudadream-torchbench: {changed}: ", line);
        Assert.Contains("not timing", line);
    }

    [Theory]
    [InlineData("--batch", "0", "--batch 0: expected a positive whole number")]
    [InlineData("--size", "100", "--size 100: the image side must be a multiple of 8")]
    [InlineData("--colour", "red", "unknown argument '--colour'")]
    public void BadArgumentsAreOneLineNamingThem(string name, string value, string expected)
    {
        var args = new List<string> { "--model", Fixtures.SdTiny(), "--batch", "1", "--size", "64", "--repeats", "1", "--json", "unused.json" };
        int at = args.IndexOf(name);
        if (at >= 0) args[at + 1] = value;
        else args.AddRange([name, value]);
        var (code, _, error) = Run(args.ToArray());
        Assert.Equal(1, code);
        var line = Assert.Single(error.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Contains(expected, line);
    }

    [Fact]
    public void AMissingModelFolderIsNamed()
    {
        var (code, _, error) = Run("--model", "/nonexistent/model", "--batch", "1", "--size", "64", "--repeats", "1", "--json", "unused.json");
        Assert.Equal(1, code);
        Assert.Equal("cudadream-torchbench: /nonexistent/model: model folder not found", error.Trim());
    }
}
