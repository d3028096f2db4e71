using System.Globalization;
using CudaDream.Engine;

namespace CudaDream.TorchBench;

/// <summary>
/// The command line, a contract with <c>cudadream bench --compare</c>, which runs this program as a subprocess:
/// <c>cudadream-torchbench --model DIR --batch B --size PX --repeats R [--threads T] [--verify REF.safetensors] --json OUT.json</c>.
/// </summary>
public sealed record BenchOptions
{
    public const string Usage =
        "usage: cudadream-torchbench --model DIR --batch B --size PX --repeats R [--threads T] [--verify REF.safetensors] --json OUT.json";

    public required string Model { get; init; }
    public required int Batch { get; init; }
    /// <summary>Image side in pixels; the latents are size/8.</summary>
    public required int Size { get; init; }
    public required int Repeats { get; init; }
    /// <summary>torch.set_num_threads; default all logical cores.</summary>
    public int Threads { get; init; } = Environment.ProcessorCount;
    /// <summary>A UNet reference to reproduce before timing; null = the model folder's own refs/unet.safetensors, if any.</summary>
    public string? Verify { get; init; }
    public required string Json { get; init; }

    /// <summary>Parses the arguments; a missing, unknown or invalid one is a <see cref="CudaDreamException"/> naming it.</summary>
    public static BenchOptions Parse(IReadOnlyList<string> args)
    {
        var values = new Dictionary<string, string>(StringComparer.Ordinal);
        string[] known = ["--model", "--batch", "--size", "--repeats", "--threads", "--verify", "--json"];
        for (int i = 0; i < args.Count; i++)
        {
            var name = args[i];
            if (!known.Contains(name)) throw new CudaDreamException($"unknown argument '{name}'; {Usage}");
            if (i + 1 >= args.Count) throw new CudaDreamException($"{name} needs a value; {Usage}");
            if (!values.TryAdd(name, args[++i])) throw new CudaDreamException($"{name} given twice");
        }
        string Required(string name) => values.TryGetValue(name, out var v) ? v : throw new CudaDreamException($"{name} is required; {Usage}");
        int Positive(string name, string text) =>
            int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int v) && v > 0 ? v
                : throw new CudaDreamException($"{name} {text}: expected a positive whole number");

        var model = Required("--model");
        if (!Directory.Exists(model)) throw new CudaDreamException($"{model}: model folder not found");
        int size = Positive("--size", Required("--size"));
        if (size % 8 != 0) throw new CudaDreamException($"--size {size}: the image side must be a multiple of 8 (latents are size/8)");
        var verify = values.GetValueOrDefault("--verify");
        if (verify != null && !File.Exists(verify)) throw new CudaDreamException($"{verify}: reference file not found");
        var json = Required("--json");
        if (Directory.Exists(json)) throw new CudaDreamException($"{json}: is a folder; --json needs a file name");
        return new BenchOptions
        {
            Model = model,
            Batch = Positive("--batch", Required("--batch")),
            Size = size,
            Repeats = Positive("--repeats", Required("--repeats")),
            Threads = values.TryGetValue("--threads", out var t) ? Positive("--threads", t) : Environment.ProcessorCount,
            Verify = verify,
            Json = json,
        };
    }
}
