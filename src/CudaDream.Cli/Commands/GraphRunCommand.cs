using CommandLine;
using CudaDream.Engine;
using CudaDream.Engine.Formats;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Tensors;

namespace CudaDream.Cli.Commands;

[Verb("graph run", HelpText = "Run an ONNX graph on a CudaDream backend; tensors in and out as .safetensors.")]
public sealed class GraphRunCommand : ICommand
{
    [Option("model", Required = true, HelpText = "The .onnx file (external weights beside it are read through memory maps).")]
    public string Model { get; set; } = "";

    [Option("inputs", Required = true, HelpText = "Graph inputs by name (other tensors in the file are ignored).")]
    public string Inputs { get; set; } = "";

    [Option("out", Required = true, HelpText = "Output .safetensors: the graph outputs by name, plus --outputs.")]
    public string Out { get; set; } = "";

    [Option("outputs", HelpText = "Extra values to return: v1,alias=v2,... (ONNX value names).")]
    public string? Outputs { get; set; }

    [Option("backend", Default = "cpu", HelpText = Backends.Help)]
    public string Backend { get; set; } = "cpu";

    [Option("dtype", Default = "fp32", HelpText = "Compute type: fp32, or bf16/fp16 mixed precision (activations and weights stored in half precision, fp32 math; emu or cuda only). Results are written as fp32.")]
    public string DType { get; set; } = "fp32";

    [Option("seed", Default = 0UL, HelpText = "Seed for random ops inside the graph (RandomNormalLike).")]
    public ulong Seed { get; set; }

    [Option("no-fuse", HelpText = "Run the graph as exported, without pattern fusion.")]
    public bool NoFuse { get; set; }

    [Option("force", HelpText = "Replace an existing output file (an output that is one of the inputs is always refused).")]
    public bool Force { get; set; }

    [Option("json", HelpText = "Print a JSON summary instead of text.")]
    public bool Json { get; set; }

    private static Tensor Float32(Tensor t) => MixedPrecision.IsReduced(t.DType) ? t.To(Engine.Tensors.DType.F32) : t;

    public int Run()
    {
        OutputGuard.Check("--out", Out, Force, ("--inputs", Inputs), ("--model", Model));
        var backend = Backends.Require(Backend);
        var compute = ParseDType.Compute(DType);
        var extra = CliParse.Aliases(Outputs);
        using var inputs = SafetensorsFile.Open(Inputs);
        var graph = OnnxImporter.Load(Model);
        var shapes = new Dictionary<string, int[]>();
        var feed = new Dictionary<string, Tensor>();
        var missing = new List<string>();
        foreach (var input in graph.Inputs)
        {
            if (!inputs.Contains(input.Name)) { missing.Add(input.Name); continue; }
            var t = inputs.Get(input.Name);
            shapes[input.Name] = t.Shape;
            feed[input.Name] = t;
        }
        if (missing.Count > 0)
        {
            foreach (var o in graph.Owners) o.Dispose();
            throw new CudaDreamException($"{Inputs}: missing graph input(s) {string.Join(", ", missing)} (the file has {string.Join(", ", inputs.Names.Take(12))}{(inputs.Names.Count() > 12 ? ", ..." : "")})");
        }
        var sw = System.Diagnostics.Stopwatch.StartNew();
        using var session = GraphSession.Create(graph, shapes, new GraphSessionOptions { Fuse = !NoFuse, Seed = Seed, ExtraOutputs = extra.Select(e => e.value).ToList(), Backend = backend, Compute = compute });
        double prepare = sw.Elapsed.TotalSeconds;
        sw.Restart();
        var results = session.Run(feed);
        double run = sw.Elapsed.TotalSeconds;
        var output = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var o in session.Graph.Outputs.Where(o => !extra.Any(e => e.value == o.Name))) output[o.Name] = Float32(results[o.Name]);
        foreach (var (alias, value) in extra) output[alias] = Float32(results[value]);
        SafetensorsWriter.Write(Out, output);
        if (Json)
            Console.WriteLine(System.Text.Json.JsonSerializer.Serialize(new
            {
                model = Model, backend = backend.Name, device = session.BackendName, prepare_seconds = prepare, run_seconds = run,
                outputs = output.ToDictionary(kv => kv.Key, kv => new { dtype = kv.Value.DType.ToString(), shape = kv.Value.Shape }),
            }));
        else
        {
            foreach (var (name, t) in output) Console.WriteLine($"{name}: {t}");
            Console.WriteLine($"wrote {Out} ({session.BackendName}: prepare {prepare:F2} s, run {run:F2} s)");
        }
        return 0;
    }
}
