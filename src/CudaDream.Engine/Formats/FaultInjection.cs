using System.Globalization;
using System.Runtime.InteropServices;

namespace CudaDream.Engine.Formats;

/// <summary>
/// Test seam for the reliability suites: faults a real process meets (a full disk, a kill at any moment, a NaN
/// gradient) injected at named sites, so tests can hit them deterministically in child processes. Off unless the
/// environment variable <c>CUDADREAM_FAULTS</c> is set; rules are separated by ';':
/// <list type="bullet">
/// <item><c>write:ENOSPC|EROFS|EIO:SUBSTRING:N</c> — from the N-th file write (1-based) whose path contains SUBSTRING on,
/// every such write fails as the OS would fail it (an <see cref="IOException"/> with that errno).</item>
/// <item><c>kill:SITE:N</c> — the process sends itself SIGKILL the N-th time it reaches SITE (see <see cref="Sites"/>).</item>
/// <item><c>nan-gradient:U</c> — the trainer writes a NaN into a gradient at update U (1-based).</item>
/// </list>
/// </summary>
public static partial class FaultInjection
{
    /// <summary>Kill sites: inside a file write (after half its bytes), between a file's write and its rename, and the trainer's phases.</summary>
    public static readonly string[] Sites =
    [
        "write-mid", "write-before-rename", "class-image", "cache-entry", "step", "checkpoint-before-rename", "sample-grid", "lora-write",
    ];

    private sealed record Rule(string Kind, string Arg, string Filter, int N);

    private static readonly List<Rule> Rules = Parse(Environment.GetEnvironmentVariable("CUDADREAM_FAULTS"));
    private static readonly Dictionary<Rule, int> Hits = new();
    private static readonly object Gate = new();

    public static bool Enabled => Rules.Count > 0;

    private static List<Rule> Parse(string? spec)
    {
        var rules = new List<Rule>();
        if (string.IsNullOrWhiteSpace(spec)) return rules;
        foreach (var text in spec.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var f = text.Split(':');
            int N(string s) => int.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out int n) && n >= 1 ? n
                : throw new CudaDreamException($"CUDADREAM_FAULTS: '{text}': count '{s}' is not a positive integer");
            rules.Add(f switch
            {
                ["write", var errno, var filter, var n] => new Rule("write", errno, filter, N(n)),
                ["kill", var site, var n] when Sites.Contains(site) => new Rule("kill", site, "", N(n)),
                ["nan-gradient", var u] => new Rule("nan-gradient", "", "", N(u)),
                _ => throw new CudaDreamException($"CUDADREAM_FAULTS: '{text}' is not write:ERRNO:SUBSTRING:N, kill:SITE:N (sites {string.Join(", ", Sites)}) or nan-gradient:U"),
            });
        }
        return rules;
    }

    /// <summary>Called before a file is written: throws the configured write failure when its rule has come due.</summary>
    public static void BeforeWrite(string path)
    {
        if (Rules.Count == 0) return;
        foreach (var rule in Rules.Where(r => r.Kind == "write" && path.Contains(r.Filter, StringComparison.Ordinal)))
        {
            if (Count(rule) < rule.N) continue;
            throw rule.Arg switch
            {
                "ENOSPC" => new IOException($"No space left on device : '{path}'", 28),
                "EROFS" => new IOException($"Read-only file system : '{path}'", 30),
                _ => new IOException($"Input/output error : '{path}'", 5),
            };
        }
    }

    /// <summary>A kill site: SIGKILL to this process when a kill rule for <paramref name="site"/> comes due.</summary>
    public static void At(string site)
    {
        if (Rules.Count == 0) return;
        foreach (var rule in Rules.Where(r => r.Kind == "kill" && r.Arg == site))
            if (Count(rule) == rule.N)
            {
                Console.Out.Flush();
                kill(getpid(), 9);
                Thread.Sleep(Timeout.Infinite);
            }
    }

    /// <summary>Whether the trainer should poison a gradient at update <paramref name="update"/> (1-based).</summary>
    public static bool NanGradientAt(int update) => Rules.Any(r => r.Kind == "nan-gradient" && r.N == update);

    private static int Count(Rule rule)
    {
        lock (Gate)
        {
            Hits[rule] = Hits.GetValueOrDefault(rule) + 1;
            return Hits[rule];
        }
    }

    [LibraryImport("libc")]
    private static partial int kill(int pid, int sig);

    [LibraryImport("libc")]
    private static partial int getpid();
}
