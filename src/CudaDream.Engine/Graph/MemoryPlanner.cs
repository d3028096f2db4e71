namespace CudaDream.Engine.Graph;

/// <summary>A buffer that must exist from step <see cref="FirstUse"/> to step <see cref="LastUse"/> (inclusive).</summary>
public readonly record struct BufferLifetime(int Id, long Bytes, int FirstUse, int LastUse);

/// <summary>Where each buffer lives in the arena, and the arena's size.</summary>
public sealed record ArenaLayout(IReadOnlyDictionary<int, long> Offsets, long PeakBytes);

/// <summary>
/// The memory planner: a pure function from buffer lifetimes to offsets in one arena. Two buffers
/// may share bytes only if their lifetimes do not overlap. Greedy by size (largest first, each at the
/// lowest offset that fits beside the already placed buffers it overlaps in time) — the strategy
/// TensorFlow Lite's arena planner uses; close to optimal on network graphs.
/// </summary>
public static class MemoryPlanner
{
    public const int DefaultAlignment = 64;

    public static ArenaLayout Plan(IReadOnlyList<BufferLifetime> buffers, int alignment = DefaultAlignment)
    {
        foreach (var b in buffers)
            if (b.Bytes < 0 || b.LastUse < b.FirstUse) throw new ArgumentException($"invalid buffer lifetime {b}");
        var order = buffers.OrderByDescending(b => b.Bytes).ThenBy(b => b.FirstUse).ThenBy(b => b.Id).ToList();
        var placed = new List<(BufferLifetime b, long offset, long end)>();
        var offsets = new Dictionary<int, long>();
        long peak = 0;
        foreach (var b in order)
        {
            long size = Align(Math.Max(b.Bytes, 1), alignment);
            // Occupied intervals of buffers alive at the same time, by offset.
            var busy = placed.Where(p => p.b.FirstUse <= b.LastUse && b.FirstUse <= p.b.LastUse)
                .Select(p => (p.offset, p.end)).OrderBy(p => p.offset).ToList();
            long candidate = 0;
            foreach (var (start, end) in busy)
            {
                if (candidate + size <= start) break;
                candidate = Math.Max(candidate, end);
            }
            offsets[b.Id] = candidate;
            placed.Add((b, candidate, candidate + size));
            peak = Math.Max(peak, candidate + size);
        }
        return new ArenaLayout(offsets, peak);
    }

    /// <summary>The lower bound any plan must reach: the largest sum of sizes alive at one step.</summary>
    public static long LowerBound(IReadOnlyList<BufferLifetime> buffers, int alignment = DefaultAlignment)
    {
        if (buffers.Count == 0) return 0;
        int last = buffers.Max(b => b.LastUse);
        var delta = new long[last + 2];
        foreach (var b in buffers)
        {
            long size = Align(Math.Max(b.Bytes, 1), alignment);
            delta[b.FirstUse] += size;
            delta[b.LastUse + 1] -= size;
        }
        long cur = 0, best = 0;
        foreach (var d in delta) { cur += d; best = Math.Max(best, cur); }
        return best;
    }

    public static long Align(long v, int alignment) => (v + alignment - 1) / alignment * alignment;
}
