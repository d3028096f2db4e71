using CudaDream.Engine.Graph;
using CudaDream.Engine.Randomness;
using Xunit;

namespace CudaDream.Engine.Tests.Graph;

public class MemoryPlannerTests
{
    private static void AssertValid(IReadOnlyList<BufferLifetime> buffers, ArenaLayout layout)
    {
        for (int i = 0; i < buffers.Count; i++)
            for (int j = i + 1; j < buffers.Count; j++)
            {
                var a = buffers[i]; var b = buffers[j];
                bool liveTogether = a.FirstUse <= b.LastUse && b.FirstUse <= a.LastUse;
                long ao = layout.Offsets[a.Id], bo = layout.Offsets[b.Id];
                bool overlap = ao < bo + b.Bytes && bo < ao + a.Bytes;
                Assert.False(liveTogether && overlap, $"buffers {a} and {b} share bytes while both alive");
            }
        foreach (var b in buffers)
        {
            Assert.Equal(0, layout.Offsets[b.Id] % MemoryPlanner.DefaultAlignment);
            Assert.True(layout.Offsets[b.Id] + b.Bytes <= layout.PeakBytes);
        }
        Assert.True(layout.PeakBytes >= MemoryPlanner.LowerBound(buffers));
    }

    [Fact]
    public void ChainReusesMemory()
    {
        // a→b→c→d, each 1 KiB, each dead after its consumer: two buffers suffice.
        var buffers = Enumerable.Range(0, 4).Select(i => new BufferLifetime(i, 1024, i, i + 1)).ToList();
        var layout = MemoryPlanner.Plan(buffers);
        AssertValid(buffers, layout);
        Assert.Equal(2048, layout.PeakBytes);
    }

    [Fact]
    public void DisjointLifetimesShareOneSlot()
    {
        var buffers = new[] { new BufferLifetime(0, 100, 0, 0), new BufferLifetime(1, 100, 1, 1), new BufferLifetime(2, 100, 2, 2) };
        var layout = MemoryPlanner.Plan(buffers);
        AssertValid(buffers, layout);
        Assert.Equal(128, layout.PeakBytes);
    }

    [Fact]
    public void RandomLifetimesAreValidAndNearTheLowerBound()
    {
        for (int trial = 0; trial < 20; trial++)
        {
            var buffers = new List<BufferLifetime>();
            for (int i = 0; i < 60; i++)
            {
                int first = CounterRng.UniformInt((ulong)trial, 0, RandomPurpose.Noise, 3 * i, 50);
                int len = CounterRng.UniformInt((ulong)trial, 0, RandomPurpose.Noise, 3 * i + 1, 10);
                long bytes = 64 * (1 + CounterRng.UniformInt((ulong)trial, 0, RandomPurpose.Noise, 3 * i + 2, 100));
                buffers.Add(new BufferLifetime(i, bytes, first, first + len));
            }
            var layout = MemoryPlanner.Plan(buffers);
            AssertValid(buffers, layout);
            Assert.True(layout.PeakBytes <= 1.5 * MemoryPlanner.LowerBound(buffers), $"peak {layout.PeakBytes} vs lower bound {MemoryPlanner.LowerBound(buffers)}");
        }
    }

    [Fact]
    public void PlanIsAPureFunction()
    {
        var buffers = Enumerable.Range(0, 30).Select(i => new BufferLifetime(i, 64 * (i % 7 + 1), i % 5, i % 5 + i % 3)).ToList();
        var a = MemoryPlanner.Plan(buffers);
        var b = MemoryPlanner.Plan(buffers.AsEnumerable().Reverse().ToList());
        Assert.Equal(a.PeakBytes, b.PeakBytes);
        Assert.Equal(a.Offsets.OrderBy(kv => kv.Key), b.Offsets.OrderBy(kv => kv.Key));
    }
}
