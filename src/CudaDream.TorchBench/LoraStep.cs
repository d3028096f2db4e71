using CudaDream.Engine.Training.Lora;
using CudaDream.TorchBench.Model;
using static TorchSharp.torch;
using EngineTensor = CudaDream.Engine.Tensors.Tensor;
using Tensor = TorchSharp.torch.Tensor;

namespace CudaDream.TorchBench;

/// <summary>
/// The LoRA training step CudaDream's <c>bench</c> measures on the CPU: adapters on the modules the selector's
/// "attention" preset picks (to_q, to_k, to_v, to_out.0 of every attention), frozen base weights, forward, MSE against
/// a target, backward into the adapters — no optimizer step.
/// </summary>
public static class LoraStep
{
    public const string AttentionPreset = "attention";

    /// <summary>CudaDream's own choice of modules and initial values for a rank/alpha LoRA on <paramref name="unet"/> (GraphLora.Initialize).</summary>
    public static List<LoraAdapter> AttentionAdapters(ReferenceUNet unet, int rank, float alpha, ulong seed)
    {
        var targets = LoraTargetSelector.Select(unet.LinearTargets(), [AttentionPreset]);
        return GraphLora.Initialize(targets, rank, alpha, seed);
    }

    /// <summary>One forward + loss + backward; the adapters' (and any other leaf's) gradients accumulate into .grad. Returns the loss.</summary>
    public static double Run(UNet2DConditionModel model, Tensor sample, Tensor timestep, Tensor encoderHiddenStates, Tensor target)
    {
        using var scope = NewDisposeScope();
        var output = model.forward(sample, timestep, encoderHiddenStates);
        var loss = nn.functional.mse_loss(output, target);
        loss.backward();
        return loss.item<float>();
    }

    /// <summary>One tensor of a gradient reference against what the step computed.</summary>
    public sealed record GradientComparison(string Name, double MaxAbsError, double MaxAbsReference)
    {
        public double RelativeError => MaxAbsReference > 0 ? MaxAbsError / MaxAbsReference : MaxAbsError;
    }

    /// <summary>What <see cref="CheckGradients"/> measured: the loss and one comparison per reference gradient.</summary>
    public sealed record GradientCheck(double Loss, double ReferenceLoss, IReadOnlyList<GradientComparison> Gradients);

    /// <summary>
    /// Replays a LoRA-gradient reference (the fixture's <c>refs/unet_lora_grad.safetensors</c>: inputs, target, each
    /// module P's <c>P.lora_down.weight</c>/<c>P.lora_up.weight</c> and their <c>.grad</c>, <c>sample.grad</c>, <c>loss</c>) on
    /// a freshly loaded UNet: the reference's adapters (alpha = rank, scale 1) on CudaDream's "attention" modules, the
    /// sample requiring a gradient as in the reference, one step; compares every gradient.
    /// </summary>
    public static GradientCheck CheckGradients(string modelDir, string referencePath, int rank = 4, float alpha = 4)
    {
        using var unet = ReferenceUNet.Load(modelDir);
        var targets = LoraTargetSelector.Select(unet.LinearTargets(), [AttentionPreset]);
        var names = new List<string> { "sample", "timestep", "encoder_hidden_states", "target", "loss", "sample.grad" };
        foreach (var t in targets)
            names.AddRange([$"{t.ModulePath}.lora_down.weight", $"{t.ModulePath}.lora_up.weight", $"{t.ModulePath}.lora_down.weight.grad", $"{t.ModulePath}.lora_up.weight.grad"]);
        var r = ReferenceCheck.ReadTensors(referencePath, names);
        var adapters = targets.Select(t => new LoraAdapter(t.ModulePath, t.Component, r[$"{t.ModulePath}.lora_down.weight"], r[$"{t.ModulePath}.lora_up.weight"], alpha, rank)).ToList();
        var layers = unet.AttachLora(adapters);

        using var scope = NewDisposeScope();
        var sample = ReferenceCheck.ToTorch(r["sample"]).requires_grad_();
        double loss = Run(unet.Model, sample, ReferenceCheck.ToTorch(r["timestep"]), ReferenceCheck.ToTorch(r["encoder_hidden_states"]), ReferenceCheck.ToTorch(r["target"]));
        var comparisons = new List<GradientComparison> { Compare("sample.grad", sample.grad!, r["sample.grad"]) };
        foreach (var (path, layer) in layers)
        {
            var parameters = layer.named_parameters().ToDictionary(p => p.name, p => p.parameter);
            foreach (var part in new[] { "lora_down.weight", "lora_up.weight" })
                comparisons.Add(Compare($"{path}.{part}.grad", parameters[part].grad!, r[$"{path}.{part}.grad"]));
        }
        return new GradientCheck(loss, r["loss"].ToFloat32Array()[0], comparisons);
    }

    private static GradientComparison Compare(string name, Tensor actual, EngineTensor reference)
    {
        var (error, scale) = ReferenceCheck.MaxErrorAndScale(actual, ReferenceCheck.ToTorch(reference));
        return new GradientComparison(name, error, scale);
    }
}
