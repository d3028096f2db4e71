using CommandLine;
using CudaDream.Diffusion.Models.Export;
using CudaDream.Engine;

namespace CudaDream.Cli.Commands;

[Verb("export", HelpText = "Write a model folder with LoRAs merged as an original-SD .safetensors checkpoint (AUTOMATIC1111 keys) or a new ONNX model folder.")]
public sealed class ExportCommand : ICommand
{
    [Option("model", Required = true, HelpText = "Model folder written by `cudadream import`.")]
    public string Model { get; set; } = "";

    [Option("lora", HelpText = "LoRA file to merge, FILE or FILE:multiplier (default 1); repeat for several.")]
    public IEnumerable<string> Loras { get; set; } = [];

    [Option("weights", HelpText = "Fine-tuned weights (.safetensors, state-dict keys, optional unet./text_encoder./vae. prefix) that replace the model's; repeat for several.")]
    public IEnumerable<string> WeightFiles { get; set; } = [];

    [Option("format", Default = "ldm", HelpText = "ldm (single .safetensors file) or onnx (model folder).")]
    public string Format { get; set; } = "ldm";

    [Option("out", Required = true, HelpText = "Output .safetensors file (ldm) or folder (onnx).")]
    public string Out { get; set; } = "";

    [Option("dtype", HelpText = "fp32 or fp16; default: the model's.")]
    public string? DType { get; set; }

    [Option("force", HelpText = "Replace an existing output file (an output that is one of the inputs is always refused).")]
    public bool Force { get; set; }

    [Option("json", HelpText = "Print the result as JSON.")]
    public bool Json { get; set; }

    public int Run()
    {
        var format = Format.ToLowerInvariant() switch
        {
            "ldm" or "safetensors" or "a1111" => ExportFormat.Ldm,
            "onnx" => ExportFormat.Onnx,
            _ => throw new CudaDreamException($"--format {Format}: expected ldm or onnx"),
        };
        var loras = Loras.Select(LoraSpec.Parse).ToList();
        OutputGuard.Check("--out", Out, Force,
            [("--model", Model), .. loras.Select(l => ("--lora", (string?)l.Path)), .. WeightFiles.Select(w => ("--weights", (string?)w))]);
        var options = new ExportOptions
        {
            Format = format,
            Loras = loras,
            WeightFiles = WeightFiles.ToList(),
            FloatType = DType == null ? null : ImportCommand.ParseDType(DType),
        };
        var started = System.Diagnostics.Stopwatch.StartNew();
        var report = ModelExporter.Export(Model, Out, options, step => { if (!Json) Console.Error.WriteLine(step); });
        foreach (var w in report.Warnings) Console.Error.WriteLine($"warning: {w}");
        if (Json)
            Console.WriteLine(System.Text.Json.JsonSerializer.Serialize(new
            {
                model = Model, format = Format, out_path = Out, merged_modules = report.MergedModules, warnings = report.Warnings, seconds = started.Elapsed.TotalSeconds,
            }));
        else
            Console.WriteLine($"exported {Model} → {Out} ({format}, {report.MergedModules} modules with LoRA merged, {started.Elapsed.TotalSeconds:F1} s)");
        return 0;
    }
}
