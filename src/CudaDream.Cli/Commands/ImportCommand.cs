using CommandLine;
using CudaDream.Diffusion.Models.Import;
using CudaDream.Engine;
using CudaDream.Engine.Tensors;

namespace CudaDream.Cli.Commands;

[Verb("import", HelpText = "Convert an SD 1.x checkpoint (original single-file .safetensors, or a diffusers folder) into a diffusers ONNX model folder.")]
public sealed class ImportCommand : ICommand
{
    [Value(0, Required = true, MetaName = "CHECKPOINT", HelpText = "Original-SD (AUTOMATIC1111) .safetensors file, or a diffusers folder of .safetensors.")]
    public string Source { get; set; } = "";

    [Option("out", Required = true, HelpText = "Output folder (must not exist or be empty).")]
    public string Out { get; set; } = "";

    [Option("dtype", Default = "fp32", HelpText = "Weights and activations of the written graphs: fp32 or fp16.")]
    public string DType { get; set; } = "fp32";

    [Option("tokenizer", HelpText = "Tokenizer folder (vocab.json, merges.txt); default: the model's own or the bundled CLIP ViT-L/14 one.")]
    public string? Tokenizer { get; set; }

    [Option("config", HelpText = "Folder with unet/config.json, vae/config.json, text_encoder/config.json for a model whose widths are not SD 1.x's.")]
    public string? Config { get; set; }

    [Option("ema", HelpText = "Import the UNet from the checkpoint's EMA weights (model_ema.*).")]
    public bool Ema { get; set; }

    [Option("json", HelpText = "Print the result as JSON.")]
    public bool Json { get; set; }

    public int Run()
    {
        var options = new ImportOptions
        {
            FloatType = ParseDType(DType),
            TokenizerDir = Tokenizer,
            ConfigDir = Config,
            UseEma = Ema,
        };
        var started = System.Diagnostics.Stopwatch.StartNew();
        var report = CheckpointImporter.Import(Source, Out, options, part => { if (!Json) Console.Error.WriteLine($"building {part}"); });
        foreach (var w in report.Warnings) Console.Error.WriteLine($"warning: {w}");
        if (Json)
            Console.WriteLine(System.Text.Json.JsonSerializer.Serialize(new
            {
                source = Source, source_kind = report.SourceKind, out_dir = Out, dtype = DType, parameters = report.Parameters,
                unet_block_out_channels = report.Config.UNet.BlockOutChannels, warnings = report.Warnings, seconds = started.Elapsed.TotalSeconds,
            }));
        else
            Console.WriteLine($"imported {report.SourceKind} {Source} → {Out} ({DType}, {report.Parameters:N0} parameters, {started.Elapsed.TotalSeconds:F1} s)");
        return 0;
    }

    internal static DType ParseDType(string s) => s.ToLowerInvariant() switch
    {
        "fp32" or "float32" or "f32" => Engine.Tensors.DType.F32,
        "fp16" or "float16" or "f16" or "half" => Engine.Tensors.DType.F16,
        _ => throw new CudaDreamException($"--dtype {s}: expected fp32 or fp16"),
    };
}
