using System.Globalization;
using System.Text.Json;
using CudaDream.Fuzz;

// cudadream-fuzz [--minutes N | --seconds S] [--seed K] [--target NAME] [--out DIR]
//   seeded in-process mutation fuzzing of every harness, the time split evenly; crashes are written to DIR
//   (default artifacts/fuzz) with a JSON report; exit 1 when any crash was found.
// cudadream-fuzz --afl NAME
//   one harness under SharpFuzz's AFL fork server (afl-fuzz -i SEEDS -o OUT -- dotnet cudadream-fuzz.dll --afl NAME,
//   with CudaDream.Engine.dll and CudaDream.Diffusion.dll instrumented by the sharpfuzz tool first).
var options = args.Select((a, i) => (a, i)).Where(x => x.a.StartsWith("--", StringComparison.Ordinal))
    .ToDictionary(x => x.a[2..], x => x.i + 1 < args.Length && !args[x.i + 1].StartsWith("--", StringComparison.Ordinal) ? args[x.i + 1] : "");
var root = FindRepoRoot();
var targets = FuzzTargets.All(root).Where(t => !options.TryGetValue("target", out var only) || t.Name == only).ToList();
if (targets.Count == 0) { Console.Error.WriteLine($"no such target; targets: {string.Join(", ", FuzzTargets.All(root).Select(t => t.Name))}"); return 2; }

if (options.TryGetValue("afl", out var aflTarget))
{
    var target = targets.Single(t => t.Name == aflTarget);
    using var dir = new TempFolder();
    SharpFuzz.Fuzzer.OutOfProcess.Run(stream =>
    {
        using var ms = new MemoryStream();
        stream.CopyTo(ms);
        try { target.Run(ms.ToArray(), dir.Path); }
        catch (CudaDream.Engine.CudaDreamException) { }
    });
    return 0;
}

double seconds = options.TryGetValue("minutes", out var m) ? double.Parse(m, CultureInfo.InvariantCulture) * 60
    : options.TryGetValue("seconds", out var s) ? double.Parse(s, CultureInfo.InvariantCulture) : 60;
int seed = options.TryGetValue("seed", out var k) ? int.Parse(k, CultureInfo.InvariantCulture) : Environment.TickCount;
var outDir = options.GetValueOrDefault("out") is { Length: > 0 } o ? o : Path.Combine(root, "artifacts", "fuzz");
Directory.CreateDirectory(outDir);
var reports = new List<FuzzReport>();
foreach (var target in targets)
{
    var report = MutationFuzzer.Run(target, seed, TimeSpan.FromSeconds(seconds / targets.Count));
    reports.Add(report);
    Console.WriteLine($"{target.Name}: {report.Executions:N0} executions in {report.Elapsed.TotalSeconds:F0} s ({report.Refused:N0} refused as bad input), {report.Crashes.Count} crashes");
    foreach (var c in report.Crashes)
    {
        File.WriteAllBytes(Path.Combine(outDir, $"{c.Target}-{c.Id}.bin"), c.Input);
        Console.WriteLine($"  crash {c.Target}-{c.Id}.bin: {c.Kind}: {c.Message}");
    }
}
File.WriteAllText(Path.Combine(outDir, "report.json"), JsonSerializer.Serialize(new
{
    seed, seconds, machine = $"{Environment.ProcessorCount} cores, {Environment.OSVersion}",
    targets = reports.Select(r => new { r.Target, r.Executions, r.Refused, seconds = r.Elapsed.TotalSeconds, crashes = r.Crashes.Select(c => new { c.Id, c.Kind, c.Message }) }),
}, new JsonSerializerOptions { WriteIndented = true }));
Console.WriteLine($"seed {seed}: {reports.Sum(r => r.Executions):N0} executions, {reports.Sum(r => r.Crashes.Count)} crashes; report in {outDir}/report.json");
return reports.Any(r => r.Crashes.Count > 0) ? 1 : 0;

static string FindRepoRoot()
{
    var dir = new DirectoryInfo(AppContext.BaseDirectory);
    while (dir != null && !File.Exists(Path.Combine(dir.FullName, "CudaDream.sln"))) dir = dir.Parent;
    return dir?.FullName ?? Directory.GetCurrentDirectory();
}
