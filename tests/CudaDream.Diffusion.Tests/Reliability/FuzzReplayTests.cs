using CudaDream.Engine;
using CudaDream.Fuzz;
using CudaDream.TestSupport;
using Xunit;
using Xunit.Abstractions;

namespace CudaDream.Diffusion.Tests.Reliability;

/// <summary>
/// [R1] The fuzz harnesses in the default suite: every input that once crashed a parser (tests/CudaDream.Fuzz/regressions,
/// named target-hash.bin) is now refused as a user error or parsed, and a short seeded mutation replay (fixed seed,
/// 6 s per parser) finds nothing. The nightly run is `./build.sh fuzz --minutes N`.
/// </summary>
public class FuzzReplayTests(ITestOutputHelper output)
{
    private static readonly IReadOnlyList<FuzzTarget> Targets = FuzzTargets.All(Fixtures.RepoRoot);

    public static IEnumerable<object[]> Regressions() =>
        Directory.GetFiles(Path.Combine(Fixtures.RepoRoot, "tests", "CudaDream.Fuzz", "regressions"), "*.bin").Order().Select(f => new object[] { Path.GetFileName(f) });

    public static IEnumerable<object[]> TargetNames() => Targets.Select(t => new object[] { t.Name });

    [Theory]
    [MemberData(nameof(Regressions))]
    public void Inputs_that_once_crashed_are_refused_or_parsed(string file)
    {
        var target = Targets.Single(t => file.StartsWith(t.Name + "-", StringComparison.Ordinal));
        var input = File.ReadAllBytes(Path.Combine(Fixtures.RepoRoot, "tests", "CudaDream.Fuzz", "regressions", file));
        using var dir = new TempFolder();
        try { target.Run(input, dir.Path); }
        catch (CudaDreamException e) { output.WriteLine($"refused: {e.Message}"); }
    }

    [Theory]
    [MemberData(nameof(TargetNames))]
    public void Seeded_mutation_replay_finds_no_crash(string name)
    {
        var report = MutationFuzzer.Run(Targets.Single(t => t.Name == name), seed: 20261201, budget: TimeSpan.FromSeconds(6), maxExecutions: 20_000, hangLimit: TimeSpan.FromSeconds(5));
        output.WriteLine($"{name}: {report.Executions} executions ({report.Refused} refused) in {report.Elapsed.TotalSeconds:F1} s");
        Assert.True(report.Executions > 100, $"only {report.Executions} executions");
        Assert.True(report.Crashes.Count == 0, string.Join("\n", report.Crashes.Select(c => $"{c.Kind}: {c.Message}")));
    }
}
