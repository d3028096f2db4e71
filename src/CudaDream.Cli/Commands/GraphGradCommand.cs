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

    [Option("backend", Default = "cpu", HelpText = "cpu.")]
    public string Backend { get; set; } = "cpu";

    [Option("checkpointing", HelpText = "Recompute block activations in the backward pass (gradient checkpointing).")]
    public bool Checkpointing { get; set; }

    [Option("no-fuse", HelpText = "Differentiate the graph as exported, without pattern fusion.")]
    public bool NoFuse { get; set; }

    public int Run()
    {
        Backends.Require(Backend);
        if (Loss != "mse") throw new CudaDreamException($"--loss '{Loss}' is not supported (mse)");
        var tensors = SafetensorsFile.ReadAll(Inputs);
        var wrt = Wrt.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (Lora == null && wrt.Contains("lora") && Wrt == "lora") wrt = new[] { "inputs" };
        var sw = System.Diagnostics.Stopwatch.StartNew();
        var result = GraphGradient.Run(new GraphGradientRequest
        {
            Model = Model, Tensors = tensors, Target = Target, Lora = Lora, Wrt = wrt, Fuse = !NoFuse, GradientCheckpointing = Checkpointing,
        });
        SafetensorsWriter.Write(Out, result);
        Console.WriteLine($"loss {result[TrainingGraph.LossOutput].ToFloat32Array()[0]:G8}; {result.Count(kv => kv.Key.EndsWith(".grad"))} gradients; wrote {Out} ({sw.Elapsed.TotalSeconds:F2} s)");
        return 0;
    }
}
