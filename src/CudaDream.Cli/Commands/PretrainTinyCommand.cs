using CommandLine;
using CudaDream.Diffusion.Pretraining;
using CudaDream.Engine;

namespace CudaDream.Cli.Commands;

[Verb("pretrain-tiny", HelpText = "Pretrain the embedded tiny model from nothing on procedural captioned scenes (tokenizer, VAE, UNet) with CudaDream's engine; a killed run resumes from its work folder.")]
public sealed class PretrainTinyCommand : ICommand
{
    [Option("out", HelpText = "Model folder to write (a diffusers ONNX folder).")]
    public string Out { get; set; } = "";

    [Option("seed", Default = 1UL, HelpText = "Seed of every draw: scenes, initial weights, noise, order.")]
    public ulong Seed { get; set; } = 1;

    [Option("scenes", Default = 2048, HelpText = "Captioned scenes the UNet learns from.")]
    public int Scenes { get; set; } = 2048;

    [Option("vae-steps", Default = 1500, HelpText = "Autoencoder training steps.")]
    public int VaeSteps { get; set; } = 1500;

    [Option("unet-steps", Default = 4000, HelpText = "UNet training steps.")]
    public int UNetSteps { get; set; } = 4000;

    [Option("batch", Default = 16, HelpText = "Batch size of both phases.")]
    public int Batch { get; set; } = 16;

    [Option("work", HelpText = "Work folder (scenes, caches, checkpoints; default: <out>.work).")]
    public string? Work { get; set; }

    [Option("style-examples", HelpText = "Only write the quick start's style concept (12 toon-styled scenes with captions) into this folder.")]
    public string? StyleExamples { get; set; }

    public int Run()
    {
        if (StyleExamples != null)
        {
            TinyPretraining.WriteStyleExamples(StyleExamples);
            Console.WriteLine($"wrote 12 style examples to {StyleExamples}");
            return 0;
        }
        if (Out.Length == 0) throw new CudaDreamException("--out is required (or --style-examples DIR)");
        if (Scenes < 16 || VaeSteps < 1 || UNetSteps < 1 || Batch < 1) throw new CudaDreamException("--scenes must be at least 16; --vae-steps, --unet-steps and --batch at least 1");
        TinyPretraining.Run(new TinyPretrainOptions
        {
            OutDir = Out, Seed = Seed, Scenes = Scenes, AutoencoderSteps = VaeSteps, UNetSteps = UNetSteps,
            AutoencoderBatch = Batch, UNetBatch = Batch, WorkDir = Work,
        }, Console.WriteLine);
        return 0;
    }
}
