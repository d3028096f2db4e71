using CudaDream.Engine.Formats;
using CudaDream.Engine.Tensors;
using CudaDream.TestSupport;
using Xunit;

namespace CudaDream.Engine.Tests.Formats;

/// <summary>Output paths that cannot be files are one-line user errors (they were internal IOExceptions after the work was done).</summary>
public class AtomicFileTests
{
    [Fact]
    public void AFolderIsNoFileName()
    {
        using var dir = Fixtures.TempDir();
        var t = new Dictionary<string, Tensor> { ["x"] = Tensor.FromArray(new[] { 1f }, 1) };
        var e = Assert.Throws<CudaDreamException>(() => SafetensorsWriter.Write(dir.FullName, t));
        Assert.Equal($"{dir.FullName}: is a folder; give a file name", e.Message);
        var missing = dir.File("new") + Path.DirectorySeparatorChar;
        e = Assert.Throws<CudaDreamException>(() => SafetensorsWriter.Write(missing, t));
        Assert.Contains("is a folder", e.Message);
        Assert.False(Directory.Exists(missing));
    }

    [Fact]
    public void NothingIsCreatedUnderAFile()
    {
        using var dir = Fixtures.TempDir();
        File.WriteAllText(dir.File("plain"), "x");
        var e = Assert.Throws<CudaDreamException>(() => AtomicFile.WriteAllText(Path.Combine(dir.File("plain"), "sub", "out.txt"), "y"));
        Assert.Contains($"under {dir.File("plain")}, which is a file", e.Message);
        Assert.Equal("x", File.ReadAllText(dir.File("plain")));
    }

    [Fact]
    public void AFileIsReplacedWhole()
    {
        using var dir = Fixtures.TempDir();
        AtomicFile.WriteAllText(dir.File("a.txt"), "first");
        AtomicFile.WriteAllText(dir.File("a.txt"), "second");
        Assert.Equal("second", File.ReadAllText(dir.File("a.txt")));
        Assert.Equal(new[] { "a.txt" }, Directory.GetFiles(dir.FullName).Select(Path.GetFileName));
    }
}
