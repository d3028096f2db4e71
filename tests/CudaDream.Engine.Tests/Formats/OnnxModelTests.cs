using CudaDream.Engine.Formats;
using CudaDream.Engine.Graph;
using CudaDream.TestSupport;
using Google.Protobuf;
using Onnx;
using Xunit;

namespace CudaDream.Engine.Tests.Formats;

public class OnnxModelTests
{
    [Fact]
    public void ExternalWeightsAreMappedNotCopied()
    {
        using var m = OnnxModel.Load(Fixtures.SdTiny("unet/model.onnx"));
        Assert.Equal(14, m.Opset);
        var w = m.Initializers["conv_in.weight"];
        Assert.Equal(new[] { 32, 4, 3, 3 }, w.Shape);
        // The tensor views the memory map (an UnmanagedMemory manager), not a managed array.
        Assert.False(System.Runtime.InteropServices.MemoryMarshal.TryGetArray<byte>(w.Data, out _));
        Assert.Equal(494, m.InitializerInfo.Count);
    }

    [Fact]
    public void InspectionWorksWithoutTheWeightsFile()
    {
        using var m = OnnxModel.LoadForInspection(Fixtures.Path("sd15-structure/unet/model.onnx"));
        Assert.True(m.HasMissingWeights);
        Assert.Equal(686, m.InitializerInfo.Count);
    }

    /// <summary>Copies the sd-tiny UNet folder with the first external initializer's entry rewritten.</summary>
    private static string Tamper(TempDir dir, Action<TensorProto> edit, bool copyWeights = true)
    {
        var model = ModelProto.Parser.ParseFrom(File.ReadAllBytes(Fixtures.SdTiny("unet/model.onnx")));
        var t = model.Graph.Initializer.First(i => i.DataLocation == TensorProto.Types.DataLocation.External);
        edit(t);
        var sub = Path.Combine(dir.FullName, "model");
        Directory.CreateDirectory(sub);
        if (copyWeights) File.Copy(Fixtures.SdTiny("unet/weights.pb"), Path.Combine(sub, "weights.pb"));
        var path = Path.Combine(sub, "model.onnx");
        File.WriteAllBytes(path, model.ToByteArray());
        return path;
    }

    private static void SetEntry(TensorProto t, string key, string value) => t.ExternalData.First(e => e.Key == key).Value = value;

    [Theory]
    [InlineData("location", "../weights.pb", "leaves the model's folder")]
    [InlineData("location", "/etc/passwd", "leaves the model's folder")]
    [InlineData("location", "sub/../../x.pb", "leaves the model's folder")]
    [InlineData("offset", "999999999", "past the end of the file")]
    [InlineData("length", "12", "external length says 12")]
    [InlineData("offset", "-5", "invalid external offset")]
    [InlineData("location", "missing.pb", "not found")]
    public void HostileExternalDataIsRefused(string key, string value, string expected)
    {
        using var dir = Fixtures.TempDir();
        var path = Tamper(dir, t => SetEntry(t, key, value));
        var e = Assert.ThrowsAny<CudaDreamException>(() => OnnxModel.Load(path));
        Assert.Contains(expected, e.Message);
        // The message names the tensor and a file (the model, or the weights file it points into).
        Assert.Contains("conv_in.weight", e.Message);
        Assert.Contains(Path.GetDirectoryName(path)!, e.Message);
    }

    [Fact]
    public void LyingInlineDataIsRefused()
    {
        using var dir = Fixtures.TempDir();
        var model = ModelProto.Parser.ParseFrom(File.ReadAllBytes(Fixtures.SdTiny("text_encoder/model.onnx")));
        var t = model.Graph.Initializer.First(i => !i.RawData.IsEmpty);
        t.Dims[0] += 1;
        var path = dir.File("te.onnx");
        File.WriteAllBytes(path, model.ToByteArray());
        var e = Assert.Throws<InvalidFileException>(() => OnnxModel.Load(path));
        Assert.Contains("raw_data has", e.Message);
        Assert.StartsWith(path, e.Message);
    }

    [Fact]
    public void AbsurdDimensionIsRefused()
    {
        using var dir = Fixtures.TempDir();
        var model = ModelProto.Parser.ParseFrom(File.ReadAllBytes(Fixtures.SdTiny("text_encoder/model.onnx")));
        model.Graph.Initializer[0].Dims[0] = -3;
        var path = dir.File("te.onnx");
        File.WriteAllBytes(path, model.ToByteArray());
        Assert.Contains("invalid dimension", Assert.Throws<InvalidFileException>(() => OnnxModel.Load(path)).Message);
    }

    [Fact]
    public void TruncatedOrGarbageFileIsRefused()
    {
        using var dir = Fixtures.TempDir();
        var bytes = File.ReadAllBytes(Fixtures.SdTiny("text_encoder/model.onnx"));
        var cut = dir.File("cut.onnx");
        File.WriteAllBytes(cut, bytes[..(bytes.Length / 2)]);
        Assert.StartsWith(cut, Assert.Throws<InvalidFileException>(() => OnnxModel.Load(cut)).Message);
        var junk = dir.File("junk.onnx");
        File.WriteAllBytes(junk, Enumerable.Range(0, 4096).Select(i => (byte)(i * 7919 % 251)).ToArray());
        Assert.StartsWith(junk, Assert.Throws<InvalidFileException>(() => OnnxModel.Load(junk)).Message);
    }

    [Fact]
    public void UnknownOpIsAnErrorNamingTheNode()
    {
        using var dir = Fixtures.TempDir();
        var model = ModelProto.Parser.ParseFrom(File.ReadAllBytes(Fixtures.SdTiny("text_encoder/model.onnx")));
        var node = model.Graph.Node.First(n => n.OpType == "Softmax");
        node.OpType = "FancySoftmax";
        var path = dir.File("te.onnx");
        File.WriteAllBytes(path, model.ToByteArray());
        var e = Assert.Throws<GraphException>(() => GraphSession.Create(path, new Dictionary<string, int[]> { ["input_ids"] = new[] { 1, 77 } }));
        Assert.Contains(node.Name, e.Message);
        Assert.Contains("FancySoftmax", e.Message);
    }
}
