using CudaDream.Engine.Formats;
using CudaDream.Engine.Tensors;
using CudaDream.TestSupport;
using Onnx;
using Xunit;

namespace CudaDream.Engine.Tests.Formats;

public sealed class OnnxWriterTests : IDisposable
{
    private readonly TempDir _dir = Fixtures.TempDir();

    private static (Onnx.ModelProto, List<OnnxInitializer>) SmallModel()
    {
        var g = new OnnxGraphBuilder("g");
        g.AddInput("x", DType.F32, "batch", 300);
        var big = Tensor.FromArray(Enumerable.Range(0, 300 * 2).Select(i => (float)i).ToArray(), 2, 300);
        var small = Tensor.FromArray(new[] { 0.5f, -1f }, 2);
        string y;
        using (g.Scope("layers.0.proj"))
        {
            var w = g.AddInitializer("layers.0.proj.weight", DType.F32, [2, 300], big);
            var b = g.AddInitializer("layers.0.proj.bias", DType.F32, [2], small);
            var wt = g.Op("Transpose", [w], new OnnxAttribute("perm", new long[] { 1, 0 }));
            y = g.Op("Add", g.Op("MatMul", "x", wt), b);
        }
        g.AddOutput("y", y, DType.F32, "batch", 2);
        return (g.ToModel(17), g.Initializers.ToList());
    }

    [Fact]
    public void NodesAreNamedByModuleScopeLikeTheTorchExporter()
    {
        var (model, _) = SmallModel();
        Assert.Equal(new[] { "/layers.0/proj/Transpose", "/layers.0/proj/MatMul", "/layers.0/proj/Add" }, model.Graph.Node.Select(n => n.Name));
        Assert.Equal("/layers.0/proj/MatMul_output_0", model.Graph.Node[1].Output[0]);
        Assert.Equal("y", model.Graph.Node[2].Output[0]);
        Assert.Equal(17, model.OpsetImport.Single().Version);
    }

    [Fact]
    public void ExternalDataKeepsSmallTensorsInlineAndAlignsOffsets()
    {
        var (model, inits) = SmallModel();
        var path = _dir.File("m/model.onnx");
        OnnxWriter.Write(path, model, inits, new OnnxWriteOptions { ExternalData = true });
        var back = ModelProto.Parser.ParseFrom(File.ReadAllBytes(path));
        var weight = back.Graph.Initializer.Single(t => t.Name == "layers.0.proj.weight");
        var bias = back.Graph.Initializer.Single(t => t.Name == "layers.0.proj.bias");
        Assert.Equal(TensorProto.Types.DataLocation.External, weight.DataLocation);
        Assert.Equal(8, bias.RawData.Length);
        var entries = weight.ExternalData.ToDictionary(e => e.Key, e => e.Value);
        Assert.Equal("weights.pb", entries["location"]);
        long offset = long.Parse(entries["offset"]), length = long.Parse(entries["length"]);
        Assert.Equal(0, offset % 64);
        Assert.Equal(2400, length);
        var data = File.ReadAllBytes(_dir.File("m/weights.pb"));
        Assert.Equal(inits[0].Data!.Data.ToArray(), data.AsSpan((int)offset, (int)length).ToArray());
        Assert.Empty(Directory.GetFiles(_dir.File("m"), ".*"));
    }

    [Fact]
    public void InlineByDefaultBelowTwoGigabytes()
    {
        var (model, inits) = SmallModel();
        var path = _dir.File("model.onnx");
        OnnxWriter.Write(path, model, inits);
        Assert.False(File.Exists(_dir.File("weights.pb")));
        var back = ModelProto.Parser.ParseFrom(File.ReadAllBytes(path));
        Assert.All(back.Graph.Initializer, t => Assert.Equal(TensorProto.Types.DataLocation.Default, t.DataLocation));
    }

    [Fact]
    public void ShapeOnlyGraphsAreNotWritten()
    {
        var (model, inits) = SmallModel();
        inits[0] = inits[0] with { Data = null };
        Assert.Throws<ArgumentException>(() => OnnxWriter.Write(_dir.File("x.onnx"), model, inits));
        Assert.False(File.Exists(_dir.File("x.onnx")));
    }

    public void Dispose() => _dir.Dispose();
}
