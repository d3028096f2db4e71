using System.Text.Json;
using CudaDream.Cli;
using CudaDream.Engine.Formats;
using CudaDream.TestSupport;
using Xunit;

namespace CudaDream.Cli.Tests;

/// <summary>Runs `cudadream import` / `export` through the CLI entry point: exit codes, messages, outputs.</summary>
[Collection("Console")]
public sealed class ImportExportCommandTests : IDisposable
{
    private readonly TempDir _dir = Fixtures.TempDir();

    private static (int Code, string Out, string Err) Cli(params string[] args)
    {
        var (stdout, stderr) = (Console.Out, Console.Error);
        var o = new StringWriter();
        var e = new StringWriter();
        Console.SetOut(o);
        Console.SetError(e);
        try { return (Program.Run(args), o.ToString(), e.ToString()); }
        finally { Console.SetOut(stdout); Console.SetError(stderr); }
    }

    private string[] ImportArgs(string outDir, params string[] extra) =>
        ["import", Fixtures.SdTiny("checkpoint.safetensors"), "--out", outDir,
         "--tokenizer", Fixtures.SdTiny("tokenizer"), "--config", Fixtures.SdTiny("configs"), .. extra];

    [Fact]
    public void ImportThenExportWithLora()
    {
        var model = _dir.File("model");
        var (code, stdout, stderr) = Cli(ImportArgs(model, "--json"));
        Assert.True(code == 0, stderr);
        using (var doc = JsonDocument.Parse(stdout))
            Assert.Equal(2_472_691, doc.RootElement.GetProperty("parameters").GetInt64());
        Assert.True(File.Exists(Path.Combine(model, "unet", "model.onnx")));

        var ldm = _dir.File("merged.safetensors");
        (code, stdout, stderr) = Cli("export", "--model", model, "--lora", Fixtures.SdTiny("refs/lora_kohya.safetensors") + ":0.8",
            "--format", "ldm", "--out", ldm, "--dtype", "fp16");
        Assert.True(code == 0, stderr);
        Assert.Contains("132 modules", stdout);
        using var f = SafetensorsFile.Open(ldm);
        Assert.Equal(730, f.Names.Count());
        Assert.All(f.Entries, e => Assert.Equal(Engine.Tensors.DType.F16, e.DType));

        // two instances of one LoRA at 0.5 and 0.3 merge like one at 0.8
        var twice = _dir.File("twice.safetensors");
        var lora = Fixtures.SdTiny("refs/lora_kohya.safetensors");
        (code, _, stderr) = Cli("export", "--model", model, "--lora", lora + ":0.5", "--lora", lora + ":0.3", "--out", twice, "--dtype", "fp16");
        Assert.True(code == 0, stderr);
        using (var t = SafetensorsFile.Open(twice))
            foreach (var n in f.Names)
                TensorAssert.Close(f.Get(n).To(Engine.Tensors.DType.F32), t.Get(n).To(Engine.Tensors.DType.F32), 1e-3, n);

        var onnx = _dir.File("onnx");
        (code, _, stderr) = Cli("export", "--model", model, "--format", "onnx", "--out", onnx);
        Assert.True(code == 0, stderr);
        Assert.True(File.Exists(Path.Combine(onnx, "model_index.json")));
    }

    [Fact]
    public void BadInputGivesOneErrorLineAndExitOne()
    {
        var ckpt = _dir.File("model.ckpt");
        File.WriteAllBytes(ckpt, [0x80, 0x02]);
        var (code, _, stderr) = Cli("import", ckpt, "--out", _dir.File("a"));
        Assert.Equal(1, code);
        Assert.StartsWith("error: ", stderr);
        Assert.Contains("pickle", stderr);
        Assert.Single(stderr.Trim().Split('\n'));

        (code, _, stderr) = Cli("import", _dir.File("missing.safetensors"), "--out", _dir.File("b"));
        Assert.Equal(1, code);
        Assert.Contains("missing.safetensors", stderr);

        (code, _, stderr) = Cli(ImportArgs(_dir.File("c"), "--dtype", "int8"));
        Assert.Equal(1, code);
        Assert.Contains("--dtype int8", stderr);

        (code, _, stderr) = Cli("export", "--model", _dir.File("nowhere"), "--out", _dir.File("d.safetensors"));
        Assert.Equal(1, code);
        Assert.Contains("nowhere", stderr);

        Assert.DoesNotContain(Directory.EnumerateFileSystemEntries(_dir.FullName), p => !p.EndsWith("model.ckpt"));
    }

    [Fact]
    public void HelpAndMissingOptions()
    {
        Assert.Equal(0, Cli("import", "--help").Code);
        Assert.Equal(0, Cli("export", "--help").Code);
        Assert.Equal(2, Cli("import", Fixtures.SdTiny("checkpoint.safetensors")).Code);
    }

    public void Dispose() => _dir.Dispose();
}
