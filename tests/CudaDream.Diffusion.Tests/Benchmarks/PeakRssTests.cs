using CudaDream.Diffusion.Benchmarks;
using Xunit;

namespace CudaDream.Diffusion.Tests.Benchmarks;

/// <summary>bench --compare reads peak RSS from /proc/self/status, whose padding shrinks to nothing at 8 digits (a 12 GB SD 1.5 run failed on it).</summary>
public class PeakRssTests
{
    [Theory]
    [InlineData("VmHWM:\t    2192 kB", 2192L * 1024)]
    [InlineData("VmHWM:\t12744268 kB", 12744268L * 1024)]
    [InlineData("VmHWM:\t 1274426 kB", 1274426L * 1024)]
    public void The_status_line_is_read_at_every_width(string line, long bytes) =>
        Assert.Equal(bytes, BenchmarkComparison.KibibyteLine(line));
}
