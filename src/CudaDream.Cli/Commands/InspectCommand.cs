using System.Text.Json;
using CommandLine;
using CudaDream.Engine;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Training;

namespace CudaDream.Cli.Commands;

[Verb("inspect", HelpText = "Describe an ONNX graph: opset, ops before/after specialisation and fusion, parameters, FLOPs, planned memory.")]
public sealed class InspectCommand : ICommand
{
    [Value(0, MetaName = "MODEL", Required = true, HelpText = "The .onnx file (its external weights may be absent: shapes are enough).")]
    public string Model { get; set; } = "";

    [Option("shape", HelpText = "Concrete input shape, name=d0,d1,... (repeat per input); needed for dynamic inputs.")]
    public IEnumerable<string> Shape { get; set; } = Array.Empty<string>();

    [Option("no-fuse", HelpText = "Report the specialised graph without pattern fusion.")]
    public bool NoFuse { get; set; }

    [Option("json", HelpText = "Print JSON.")]
    public bool Json { get; set; }

    [Option("train", HelpText = "Also plan a LoRA training step (forward, loss, backward) and print its peak memory with and without gradient checkpointing.")]
    public bool Train { get; set; }

    [Option("lora-rank", Default = 4, HelpText = "LoRA rank for --train.")]
    public int LoraRank { get; set; } = 4;

    [Option("lora-targets", Default = "attention", HelpText = "LoRA targets for --train: presets (attention, ff, proj, locon, text, kohya) or module-path globs, comma separated.")]
    public string LoraTargets { get; set; } = "attention";

    public int Run()
    {
        var shapes = CliParse.Shapes(Shape);
        var r = GraphInspector.Inspect(Model, shapes, !NoFuse);
        TrainingMemoryReport? t = null;
        if (Train)
        {
            if (r.OpsAfter == null) throw new CudaDreamException($"{Model}: --train needs --shape for every dynamic input");
            if (LoraRank <= 0) throw new CudaDreamException($"--lora-rank {LoraRank} must be positive");
            t = TrainingMemory.Estimate(Model, shapes, LoraRank, LoraTargets.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
        }
        if (Json)
        {
            Console.WriteLine(JsonSerializer.Serialize(new
            {
                path = r.Path, opset = r.Opset, inputs = r.Inputs, parameters = r.Parameters, parameter_bytes = r.ParameterBytes,
                weights_loaded = r.WeightsLoaded, ops_before = r.OpsBefore, ops_after = r.OpsAfter, forward_flops = r.ForwardFlops,
                activation_bytes = r.ActivationBytes, activation_bytes_unplanned = r.ActivationBytesUnplanned,
                remaining_shape_arithmetic = r.RemainingShapeArithmetic, fusions = r.Fusions,
                training = t == null ? null : new
                {
                    lora_rank = LoraRank, lora_targets = LoraTargets, adapters = t.Adapters, trainable_parameters = t.TrainableParameters,
                    peak_bytes = t.PeakBytes, peak_bytes_checkpointed = t.PeakBytesCheckpointed, checkpointing_saving = t.Saving,
                },
            }, new JsonSerializerOptions { WriteIndented = true }));
            return 0;
        }
        Console.WriteLine($"model       {r.Path}");
        Console.WriteLine($"opset       {r.Opset}");
        Console.WriteLine($"inputs      {string.Join(", ", r.Inputs.Select(kv => $"{kv.Key}{Fmt(kv.Value)}"))}");
        Console.WriteLine($"parameters  {r.Parameters:N0} ({CliParse.FormatBytes(r.ParameterBytes)}{(r.WeightsLoaded ? "" : ", weights file absent")})");
        Console.WriteLine($"ops before  {r.OpsBefore.Values.Sum()} nodes: {Hist(r.OpsBefore)}");
        if (r.OpsAfter == null)
        {
            var dyn = r.Inputs.Where(kv => kv.Value == null || kv.Value.Any(d => d < 0)).Select(kv => kv.Key);
            Console.WriteLine($"(give --shape for {string.Join(", ", dyn)} to specialise, fuse and plan)");
            return 0;
        }
        Console.WriteLine($"ops after   {r.OpsAfter.Values.Sum()} nodes: {Hist(r.OpsAfter)}");
        Console.WriteLine($"shape arithmetic left  {r.RemainingShapeArithmetic}");
        Console.WriteLine($"forward     {r.ForwardFlops / 1e9:F2} GFLOPs (2 × multiply-adds)");
        Console.WriteLine($"activations {CliParse.FormatBytes(r.ActivationBytes!.Value)} planned arena (without sharing: {CliParse.FormatBytes(r.ActivationBytesUnplanned!.Value)})");
        if (t != null)
        {
            Console.WriteLine($"training    rank-{LoraRank} LoRA on {t.Adapters} modules ({LoraTargets}), {t.TrainableParameters:N0} trainable parameters");
            Console.WriteLine($"  step peak (activations, saved tensors, gradients; weights excluded): {CliParse.FormatBytes(t.PeakBytes)}");
            Console.WriteLine($"  with gradient checkpointing: {CliParse.FormatBytes(t.PeakBytesCheckpointed)} ({t.Saving:P0} less)");
        }
        return 0;
    }

    private static string Fmt(int[]? s) => s == null ? "[?]" : "[" + string.Join(",", s.Select(d => d < 0 ? "?" : d.ToString())) + "]";
    private static string Hist(IReadOnlyDictionary<string, int> h) => string.Join(", ", h.Select(kv => $"{kv.Key} {kv.Value}"));
}
