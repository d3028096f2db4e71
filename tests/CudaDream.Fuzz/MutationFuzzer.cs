using System.Diagnostics;
using System.Security.Cryptography;
using CudaDream.Engine;

namespace CudaDream.Fuzz;

/// <summary>An input that made a parser throw something other than a user error, or run too long.</summary>
public sealed record FuzzCrash(string Target, string Kind, string Message, byte[] Input)
{
    public string Id => Convert.ToHexString(SHA256.HashData(Input))[..16];
}

public sealed record FuzzReport(string Target, long Executions, long Refused, TimeSpan Elapsed, IReadOnlyList<FuzzCrash> Crashes);

/// <summary>
/// An in-process mutation fuzzer driven by a seeded generator: each execution takes a seed input (or an earlier
/// mutant), applies 1–8 mutations — bit flips, byte sets, "interesting" values (0, 0xFF, 0x7F, 0x80, ±1 and
/// int32/int64 limits, little- and big-endian), block deletes, duplicates and inserts, splices with another seed,
/// truncation — and runs the harness. The same seed gives the same inputs, so a replay is reproducible. There is no
/// coverage feedback (that needs SharpFuzz's instrumentation under AFL/libFuzzer: see Program's --afl mode).
/// </summary>
public static class MutationFuzzer
{
    private static readonly long[] Interesting = [0, 1, -1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, int.MaxValue, int.MinValue, uint.MaxValue, long.MaxValue, long.MinValue, 100_000_001];

    public static FuzzReport Run(FuzzTarget target, int seed, TimeSpan budget, long maxExecutions = long.MaxValue, TimeSpan? hangLimit = null)
    {
        var random = new Random(seed);
        var seeds = target.Seeds();
        var pool = new List<byte[]>(seeds);
        var crashes = new List<FuzzCrash>();
        var seen = new HashSet<string>();
        long executions = 0, refused = 0;
        var hang = hangLimit ?? TimeSpan.FromSeconds(10);
        var clock = Stopwatch.StartNew();
        using var dir = new TempFolder();
        // The seeds themselves first: they must parse.
        foreach (var s in seeds) Execute(s, mustParse: true);
        while (clock.Elapsed < budget && executions < maxExecutions)
        {
            var input = Mutate(random, pool[random.Next(pool.Count)], seeds);
            bool parsed = Execute(input, mustParse: false);
            // Mutants that still parse are kept as further starting points (bounded), a cheap stand-in for coverage.
            if (parsed && pool.Count < 64 && input.Length < 4 << 20) pool.Add(input);
        }
        return new FuzzReport(target.Name, executions, refused, clock.Elapsed, crashes);

        bool Execute(byte[] input, bool mustParse)
        {
            executions++;
            var started = Stopwatch.StartNew();
            try
            {
                target.Run(input, dir.Path);
                if (started.Elapsed > hang) Record("hang", $"took {started.Elapsed.TotalSeconds:F1} s", input);
                return true;
            }
            catch (CudaDreamException e)
            {
                refused++;
                if (mustParse) Record("seed refused", e.Message, input);
                else if (e.Message.Contains("header length -", StringComparison.Ordinal)) Record("negative length in message", e.Message, input);
                return false;
            }
            catch (Exception e)
            {
                Record(e.GetType().Name, $"{e.Message.Split('\n')[0]} at {e.StackTrace?.Split('\n').FirstOrDefault(l => l.Contains("CudaDream", StringComparison.Ordinal))?.Trim()}", input);
                return false;
            }
        }

        void Record(string kind, string message, byte[] input)
        {
            // One report per distinct failure site.
            if (seen.Add(kind + message[..Math.Min(message.Length, 160)])) crashes.Add(new FuzzCrash(target.Name, kind, message, input));
        }
    }

    public static byte[] Mutate(Random r, byte[] source, IReadOnlyList<byte[]> seeds)
    {
        var b = new List<byte>(source);
        int count = 1 + r.Next(8);
        for (int m = 0; m < count; m++)
        {
            if (b.Count == 0) { b.Add((byte)r.Next(256)); continue; }
            int at = r.Next(b.Count);
            switch (r.Next(9))
            {
                case 0: b[at] ^= (byte)(1 << r.Next(8)); break;
                case 1: b[at] = (byte)r.Next(256); break;
                case 2:
                    {
                        long v = Interesting[r.Next(Interesting.Length)];
                        int width = new[] { 1, 2, 4, 8 }[r.Next(4)];
                        var bytes = BitConverter.GetBytes(v)[..width];
                        if (r.Next(2) == 0) Array.Reverse(bytes);
                        for (int i = 0; i < width && at + i < b.Count; i++) b[at + i] = bytes[i];
                        break;
                    }
                case 3: b.RemoveRange(at, Math.Min(b.Count - at, 1 + r.Next(Math.Max(1, b.Count / 8)))); break;
                case 4:
                    {
                        int len = Math.Min(b.Count - at, 1 + r.Next(64));
                        b.InsertRange(r.Next(b.Count), b.GetRange(at, len));
                        break;
                    }
                case 5: b.InsertRange(at, Enumerable.Range(0, 1 + r.Next(16)).Select(_ => (byte)r.Next(256))); break;
                case 6:
                    {
                        var other = seeds[r.Next(seeds.Count)];
                        if (other.Length == 0) break;
                        int from = r.Next(other.Length), len = Math.Min(other.Length - from, 1 + r.Next(256));
                        b.InsertRange(at, other.AsSpan(from, len).ToArray());
                        break;
                    }
                case 7: b.RemoveRange(at, b.Count - at); break;
                default:
                    {
                        // An ASCII digit run replaced: sizes, offsets and lengths in JSON and text formats.
                        byte digit = (byte)('0' + r.Next(10));
                        for (int i = at; i < b.Count && i < at + 1 + r.Next(20); i++) if (b[i] is >= (byte)'0' and <= (byte)'9') b[i] = digit; else break;
                        if (r.Next(4) == 0) b.Insert(at, (byte)'-');
                        break;
                    }
            }
        }
        return b.ToArray();
    }
}
