namespace CudaDream.TestSupport;

/// <summary>Paths inside the repository: fixtures copied from PyTorch/diffusers runs live in tests/fixtures.</summary>
public static class Fixtures
{
    private static readonly Lazy<string> Root = new(() =>
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir != null && !File.Exists(System.IO.Path.Combine(dir.FullName, "CudaDream.sln"))) dir = dir.Parent;
        return dir?.FullName ?? throw new InvalidOperationException("repository root (CudaDream.sln) not found above " + AppContext.BaseDirectory);
    });

    public static string RepoRoot => Root.Value;

    /// <summary>A path under tests/fixtures, e.g. Fixtures.Path("sd-tiny/refs/unet.safetensors").</summary>
    public static string Path(string relative) => System.IO.Path.Combine(Root.Value, "tests", "fixtures", relative);

    public static string SdTiny(string relative = "") => Path(System.IO.Path.Combine("sd-tiny", relative));

    /// <summary>The embedded default model, pretrained by pretrain-tiny (models/tiny-sd).</summary>
    public static string EmbeddedModel => System.IO.Path.Combine(Root.Value, "models", "tiny-sd");

    /// <summary>A fresh temporary folder that is deleted when disposed.</summary>
    public static TempDir TempDir() => new();
}

public sealed class TempDir : IDisposable
{
    public string FullName { get; } = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "cudadream-test-" + Guid.NewGuid().ToString("N"));
    public TempDir() => Directory.CreateDirectory(FullName);
    public string File(string name) => System.IO.Path.Combine(FullName, name);
    public void Dispose() { try { Directory.Delete(FullName, true); } catch { } }
}
