using System.Text;
using CudaDream.Diffusion.Images;
using CudaDream.Diffusion.Models;
using CudaDream.Diffusion.Tokenizers;
using CudaDream.Diffusion.Training;
using CudaDream.Engine.Formats;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Tensors;
using CudaDream.Engine.Training.Lora;
using Google.Protobuf;
using Onnx;

namespace CudaDream.Fuzz;

/// <summary>A parser of untrusted input under fuzz: seed inputs and the harness that feeds it one input.</summary>
/// <param name="Run">Parses one input. A <see cref="Engine.CudaDreamException"/> is the parser refusing the input (fine);
/// any other exception is a crash.</param>
public sealed record FuzzTarget(string Name, Func<IReadOnlyList<byte[]>> Seeds, Action<byte[], string> Run);

/// <summary>
/// The harnesses: safetensors, ONNX (protobuf and external data), images (PNG, JPEG, WebP, BMP, GIF through the
/// image loader), the training config with its concepts, LoRA files (kohya/diffusers/PEFT key parsing against the
/// sd-tiny model's modules), tokenizer files. Inputs reach the parsers as files, as users' inputs do; an input that
/// holds two files (ONNX + external data, vocab + merges) is split at its first 0xFE 0xFE 0xFE 0xFE marker.
/// </summary>
public static class FuzzTargets
{
    private static readonly byte[] Split = [0xFE, 0xFE, 0xFE, 0xFE];

    public static IReadOnlyList<FuzzTarget> All(string repoRoot)
    {
        string Fixture(string p) => Path.Combine(repoRoot, "tests", "fixtures", "sd-tiny", p);
        var loraTargets = new Lazy<List<LoraTarget>>(() =>
            ModelFolder.Open(Fixture("")).LoraSlots().Select(s => new LoraTarget(s.Component, s.ModulePath, s.WeightShape)).DistinctBy(t => (t.Component, t.ModulePath)).ToList());
        return
        [
            new("safetensors", () => [SmallSafetensors(), LoraSeed(Fixture("refs/lora_kohya.safetensors"))],
                (input, dir) =>
                {
                    var path = Write(dir, "x.safetensors", input);
                    using var f = SafetensorsFile.Open(path);
                    foreach (var e in f.Entries) _ = f.Get(e.Name).ByteLength;
                }),
            new("onnx", () => [OnnxWithExternalData(Fixture("text_encoder/model.onnx"))],
                (input, dir) =>
                {
                    var (model, data) = Halves(input);
                    Write(dir, "weights.pb", data);
                    var graph = OnnxImporter.Load(Write(dir, "model.onnx", model));
                    foreach (var o in graph.Owners) o.Dispose();
                }),
            new("image", () => [.. Directory.GetFiles(Path.Combine(repoRoot, "models", "tiny-sd", "concepts", "orange-tiles"), "*.png").Take(1).Select(File.ReadAllBytes),
                    File.ReadAllBytes(Path.Combine(repoRoot, "models", "tiny-sd", "concepts", "teal-rings", "rings_01.jpg")), TinyBmp(), TinyGif(), TinyWebp()],
                (input, dir) =>
                {
                    var path = Write(dir, "x.img", input);
                    _ = ImageLoader.Load(path);
                    if (input.Length > 8 && input[0] == 0x89) _ = PngText.Read(path);
                }),
            new("training-config", () => [File.ReadAllBytes(Path.Combine(repoRoot, "models", "tiny-sd", "quickstart.json"))],
                (input, dir) =>
                {
                    var path = Write(dir, "run.json", input);
                    _ = DreamBoothConfig.Load(path, [], checkPaths: false);
                }),
            new("lora-keys", () => [LoraSeed(Fixture("refs/lora_kohya.safetensors"))],
                (input, dir) =>
                {
                    var path = Write(dir, "lora.safetensors", input);
                    _ = LoraFile.Load(path, loraTargets.Value);
                }),
            new("tokenizer", () => [[.. File.ReadAllBytes(Fixture("tokenizer/vocab.json")), .. Split, .. File.ReadAllBytes(Fixture("tokenizer/merges.txt"))]],
                (input, dir) =>
                {
                    var (vocab, merges) = Halves(input);
                    Write(dir, "vocab.json", vocab);
                    Write(dir, "merges.txt", merges);
                    var tokenizer = ClipTokenizer.FromFolder(dir);
                    _ = tokenizer.Encode("a photo of sks dog, zwx_rings on a dark background");
                }),
        ];
    }

    private static string Write(string dir, string name, byte[] bytes)
    {
        var path = Path.Combine(dir, name);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    private static (byte[] First, byte[] Second) Halves(byte[] input)
    {
        int at = input.AsSpan().IndexOf(Split);
        return at < 0 ? (input, []) : (input[..at], input[(at + Split.Length)..]);
    }

    private static byte[] SmallSafetensors()
    {
        using var dir = new TempFolder();
        var path = Path.Combine(dir.Path, "s.safetensors");
        SafetensorsWriter.Write(path, new Dictionary<string, Tensor>
        {
            ["a"] = Tensor.FromArray(new float[] { 1, 2, 3, 4, 5, 6 }, 2, 3),
            ["b.weight"] = Tensor.FromArray(new float[] { -1, 0.5f }, 2),
        }, new Dictionary<string, string> { ["format"] = "pt" });
        return File.ReadAllBytes(path);
    }

    /// <summary>A kohya LoRA cut to its first modules (small inputs mutate faster; every key form still appears).</summary>
    private static byte[] LoraSeed(string path)
    {
        var all = SafetensorsFile.ReadAll(path);
        var modules = all.Keys.Select(k => k[..k.IndexOf('.')]).Distinct().Order(StringComparer.Ordinal).Take(3).ToHashSet();
        using var dir = new TempFolder();
        var small = Path.Combine(dir.Path, "l.safetensors");
        SafetensorsWriter.Write(small, all.Where(kv => modules.Contains(kv.Key[..kv.Key.IndexOf('.')])));
        return File.ReadAllBytes(small);
    }

    /// <summary>The text encoder's graph with its larger initializers moved to external data ("weights.pb"), cut to the first 64 KiB of data.</summary>
    private static byte[] OnnxWithExternalData(string path)
    {
        var model = ModelProto.Parser.ParseFrom(File.ReadAllBytes(path));
        var data = new MemoryStream();
        foreach (var t in model.Graph.Initializer.Where(t => t.RawData.Length >= 64).Take(8))
        {
            var raw = t.RawData.ToByteArray();
            t.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = "weights.pb" });
            t.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = data.Length.ToString() });
            t.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = raw.Length.ToString() });
            t.DataLocation = TensorProto.Types.DataLocation.External;
            t.RawData = ByteString.Empty;
            data.Write(raw);
        }
        return [.. model.ToByteArray(), .. Split, .. data.ToArray()];
    }

    private static byte[] TinyBmp()
    {
        // 2×2, 24-bit, bottom-up; rows padded to 4 bytes.
        var pixels = new byte[] { 0, 0, 255, 0, 255, 0, 0, 0, 255, 0, 0, 255, 255, 255, 0, 0 };
        var header = new byte[54];
        "BM"u8.CopyTo(header);
        BitConverter.GetBytes(54 + pixels.Length).CopyTo(header, 2);
        BitConverter.GetBytes(54).CopyTo(header, 10);
        BitConverter.GetBytes(40).CopyTo(header, 14);
        BitConverter.GetBytes(2).CopyTo(header, 18);
        BitConverter.GetBytes(2).CopyTo(header, 22);
        BitConverter.GetBytes((short)1).CopyTo(header, 26);
        BitConverter.GetBytes((short)24).CopyTo(header, 28);
        BitConverter.GetBytes(pixels.Length).CopyTo(header, 34);
        return [.. header, .. pixels];
    }

    /// <summary>A 1×1 GIF89a (the smallest complete image the format allows).</summary>
    private static byte[] TinyGif() => Convert.FromBase64String("R0lGODlhAQABAIAAAP///wAAACwAAAAAAQABAAACAkQBADs=");

    private static byte[] TinyWebp()
    {
        using var bitmap = new SkiaSharp.SKBitmap(4, 4);
        bitmap.Erase(new SkiaSharp.SKColor(10, 200, 30));
        using var image = SkiaSharp.SKImage.FromBitmap(bitmap);
        using var data = image.Encode(SkiaSharp.SKEncodedImageFormat.Webp, 80);
        return data.ToArray();
    }
}

/// <summary>A temporary folder deleted on dispose.</summary>
public sealed class TempFolder : IDisposable
{
    public string Path { get; } = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "cudadream-fuzz-" + Guid.NewGuid().ToString("N"));
    public TempFolder() => Directory.CreateDirectory(Path);
    public void Dispose() { try { Directory.Delete(Path, true); } catch (IOException) { } }
}
