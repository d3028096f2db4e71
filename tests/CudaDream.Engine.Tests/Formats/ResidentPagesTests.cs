using CudaDream.Engine.Formats;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Tensors;
using CudaDream.TestSupport;
using Xunit;

namespace CudaDream.Engine.Tests.Formats;

/// <summary>
/// A half-precision model is widened to fp32 on load; its file pages, read once for that, must not stay resident beside
/// the copies (SD 1.5 in fp16: 1.6 GiB of RSS for nothing). Measured per mapping in /proc/self/smaps, so other tests'
/// files do not disturb the reading.
/// </summary>
public sealed class ResidentPagesTests : IDisposable
{
    private readonly TempDir _dir = Fixtures.TempDir();

    private const int Side = 1024; // a 1024×1024 fp16 weight: 2 MiB of external data

    private string WriteHalfModel()
    {
        var values = new Half[Side * Side];
        for (int i = 0; i < values.Length; i++) values[i] = (Half)((i % 977) / 977f - 0.5f);
        var weight = Tensor.FromSpan<Half>(DType.F16, values, [Side, Side]);
        var g = new OnnxGraphBuilder("g");
        g.AddInput("x", DType.F16, 1, Side);
        var w = g.AddInitializer("proj.weight", DType.F16, [Side, Side], weight);
        g.AddOutput("y", g.Op("MatMul", "x", w), DType.F16, 1, Side);
        var path = _dir.File("m/model.onnx");
        OnnxWriter.Write(path, g.ToModel(17), g.Initializers.ToList(), new OnnxWriteOptions { ExternalData = true });
        return path;
    }

    [Fact]
    public void ReleasedPagesReadBackTheSameBytes()
    {
        using var model = OnnxModel.Load(WriteHalfModel());
        var w = model.Initializers["proj.weight"];
        var before = w.ToFloat32Array();
        if (OperatingSystem.IsLinux()) Assert.True(ResidentKiB(_dir.File("m/weights.pb")) >= 1800, "the weights were read, so their pages are resident");
        model.ReleaseResidentPages();
        if (OperatingSystem.IsLinux()) Assert.True(ResidentKiB(_dir.File("m/weights.pb")) < 256, $"{ResidentKiB(_dir.File("m/weights.pb"))} KiB still resident");
        Assert.Equal(before, w.ToFloat32Array());
        Assert.Equal((float)(Half)(5 / 977f - 0.5f), before[5]);
    }

    [Fact]
    public void WideningOnLoadLeavesOnlyTheFloat32CopyResident()
    {
        var g = OnnxImporter.Load(WriteHalfModel());
        try
        {
            GraphPasses.Prepare(g, new Dictionary<string, int[]> { ["x"] = [1, Side] }, fuse: true);
            var w = g.Weights["proj.weight"];
            Assert.Equal(DType.F32, w.DType);
            Assert.Equal((float)(Half)(1 / 977f - 0.5f), w.Constant!.ReadOnlySpan<float>()[978]);
            if (OperatingSystem.IsLinux()) Assert.True(ResidentKiB(_dir.File("m/weights.pb")) < 256, $"{ResidentKiB(_dir.File("m/weights.pb"))} KiB of the fp16 file still resident");
        }
        finally
        {
            foreach (var o in g.Owners) o.Dispose();
        }
    }

    /// <summary>"start-end perms offset dev inode path" (the path may be absent).</summary>
    private static readonly System.Text.RegularExpressions.Regex MappingHeader = new(@"^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$");

    /// <summary>Resident KiB of this process's mappings of <paramref name="file"/> (/proc/self/smaps: a header line naming the file, then "Rss:").</summary>
    private static long ResidentKiB(string file)
    {
        string full = Path.GetFullPath(file);
        long total = 0;
        bool inside = false;
        foreach (var line in File.ReadLines("/proc/self/smaps"))
        {
            var header = MappingHeader.Match(line);
            if (header.Success)
            {
                inside = header.Groups[1].Value == full;
                continue;
            }
            if (inside && line.StartsWith("Rss:", StringComparison.Ordinal))
                total += long.Parse(line["Rss:".Length..].Trim().Split(' ')[0]);
        }
        return total;
    }

    public void Dispose() => _dir.Dispose();
}
