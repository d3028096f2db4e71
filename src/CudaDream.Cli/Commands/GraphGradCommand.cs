using CommandLine;
using CudaDream.Engine;
using CudaDream.Engine.Formats;
using CudaDream.Engine.Training;

namespace CudaDream.Cli.Commands;

[Verb("graph grad", HelpText = "Differentiate MSE(graph output, target) toward LoRA tensors, inputs or weights; tensors in and out as .safetensors.")]
public sealed class GraphGradCommand : ICommand
{
    [Option("model", Required = true, HelpText = "The .onnx file.")]
    public string Model { get; set; } = "";

    [Option("inputs", Required = true, HelpText = "Graph inputs (and the target) by name.")]
    public string Inputs { get; set; } = "";

    [Option("target", Required = true, HelpText = "Name of the target tensor in --inputs.")]
    public string Target { get; set; } = "";

    [Option("loss", Default = "mse", HelpText = "Loss: mse (mean over all elements).")]
    public string Loss { get; set; } = "mse";

    [Option("lora", HelpText = "LoRA file: <module>.lora_down.weight/.lora_up.weight[/.alpha], or kohya/diffusers keys. Non-LoRA keys are ignored.")]
    public string? Lora { get; set; }

    [Option("wrt", Default = "lora", HelpText = "Comma list: lora, inputs, input names, or globs over weight names.")]
    public string Wrt { get; set; } = "lora";

    [Option("out", Required = true, HelpText = "Output .safetensors: loss, graph outputs, <input>.grad, <lora tensor>.grad, <weight>.grad.")]
    public string Out { get; set; } = "";

    [Option("backend", Default = "cpu", HelpText = Backends.Help)]
    public string Backend { get; set; } = "cpu";

    [Option("dtype", Default = "fp32", HelpText = "Compute type: fp32, or bf16/fp16 mixed precision (activations and weights stored in half precision, fp32 math; emu or cuda only). Results are written as fp32.")]
    public string DType { get; set; } = "fp32";

    [Option("checkpointing", HelpText = "Recompute block activations in the backward pass (gradient checkpointing).")]
    public bool Checkpointing { get; set; }

    [Option("no-fuse", HelpText = "Differentiate the graph as exported, without pattern fusion.")]
    public bool NoFuse { get; set; }

    [Option("force", HelpText = "Replace an existing output file (an output that is one of the inputs is always refused).")]
    public bool Force { get; set; }

    [Option("json", HelpText = "Print a JSON summary instead of text.")]
    public bool Json { get; set; }

    public int Run()
    {
        OutputGuard.Check("--out", Out, Force, ("--inputs", Inputs), ("--model", Model), ("--lora", Lora));
        var backend = Backends.Require(Backend);
        var compute = ParseDType.Compute(DType);
        if (Loss != "mse") throw new CudaDreamException($"--loss '{Loss}' is not supported (mse)");
        var tensors = SafetensorsFile.ReadAll(Inputs);
        var wrt = Wrt.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (Lora == null && wrt.Contains("lora") && Wrt == "lora") wrt = new[] { "inputs" };
        var sw = System.Diagnostics.Stopwatch.StartNew();
        var result = GraphGradient.Run(new GraphGradientRequest
        {
            Model = Model, Tensors = tensors, Target = Target, Lora = Lora, Wrt = wrt, Fuse = !NoFuse, GradientCheckpointing = Checkpointing, Backend = backend, Compute = compute,
        });
        SafetensorsWriter.Write(Out, result);
        float loss = result[TrainingGraph.LossOutput].ToFloat32Array()[0];
        int gradients = result.Count(kv => kv.Key.EndsWith(".grad"));
        if (Json)
            Console.WriteLine(System.Text.Json.JsonSerializer.Serialize(new
            {
                model = Model, backend = backend.Name, loss, gradients, seconds = sw.Elapsed.TotalSeconds, @out = Out,
            }));
        else Console.WriteLine($"loss {loss:G8}; {gradients} gradients; wrote {Out} ({backend.Name}, {sw.Elapsed.TotalSeconds:F2} s)");
        return 0;
    }
}
