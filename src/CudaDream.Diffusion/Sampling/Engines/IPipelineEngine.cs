using CudaDream.Diffusion.Models;
using CudaDream.Engine.Tensors;

namespace CudaDream.Diffusion.Sampling.Engines;

/// <summary>
/// The four networks of a model folder loaded on one engine for one round of sampling. Networks load on first
/// use; disposing releases every session and the memory behind it (the trainer samples between steps and needs
/// it back). Tensors cross this interface as float32 (token ids as int32); a model stored in fp16 is converted
/// at the engine's boundary.
/// </summary>
public interface IPipelineEngine : IDisposable
{
    /// <summary>One line: which engine and device, e.g. "ONNX Runtime, CPU execution provider".</summary>
    string Description { get; }

    /// <summary>Runs the text encoder on token ids [B, L]; the result stays where the engine keeps it (a GPU keeps it on the device).</summary>
    IEncodedText EncodeText(Tensor inputIds);

    /// <summary>Prepares UNet calls for a fixed batch and latent size, conditioned on <paramref name="context"/> (its batch = the UNet batch).</summary>
    IUNetSession OpenUNet(IEncodedText context, int latentHeight, int latentWidth);

    /// <summary>The VAE decoder on latents [B, C, h, w] already divided by the scaling factor → images [B, 3, H, W] in about [−1, 1].</summary>
    Tensor Decode(Tensor latents);

    /// <summary>The VAE encoder's posterior parameters (mean and log-variance, stacked on the channel axis) for images [B, 3, H, W] in [−1, 1].</summary>
    Tensor EncodeMoments(Tensor pixels);
}

/// <summary>Text encoder output held by an engine.</summary>
public interface IEncodedText : IDisposable
{
    int Batch { get; }
    /// <summary>A host copy, F32 [B, L, D].</summary>
    Tensor ToTensor();
}

/// <summary>UNet evaluations at one batch and latent size with fixed conditioning.</summary>
public interface IUNetSession : IDisposable
{
    /// <summary>ε (or v) prediction for <paramref name="sample"/> [B, C, h, w] (flat) at <paramref name="timestep"/>.</summary>
    void Predict(ReadOnlySpan<float> sample, double timestep, Span<float> prediction);
}

/// <summary>What every engine is asked to change in a network before it loads it.</summary>
/// <param name="Weights">Initializers to replace (merged LoRA weights), by name, in the initializer's layout and type.</param>
/// <param name="ClipSkip">Text encoder: read an earlier hidden state into the final layer norm.</param>
/// <param name="Output">When set, the only output the network computes (the VAE encoder's moments).</param>
public sealed record NetworkEdits(IReadOnlyDictionary<string, Tensor> Weights, ClipSkipEdit? ClipSkip = null, string? Output = null)
{
    public static NetworkEdits None { get; } = new(new Dictionary<string, Tensor>());
}

/// <summary>The model folder and the per-network edits of one round, shared by every engine.</summary>
public sealed class PipelinePlan
{
    private readonly Dictionary<string, NetworkEdits> _edits = new(StringComparer.Ordinal);
    private readonly Func<string, Func<string, Tensor>, NetworkEdits> _make;

    public ModelFolder Folder { get; }

    /// <param name="make">Builds a network's edits given a reader of its stored weights (engines read them their own way).</param>
    public PipelinePlan(ModelFolder folder, Func<string, Func<string, Tensor>, NetworkEdits> make)
    {
        Folder = folder;
        _make = make;
    }

    /// <summary>
    /// The edits of <paramref name="component"/>, built once per round; <paramref name="readStored"/> reads a base
    /// weight by initializer name. The VAE encoder always computes its posterior's moments (never the exporter's
    /// randomly sampled latent), whatever the maker says.
    /// </summary>
    public NetworkEdits EditsFor(string component, Func<string, Tensor> readStored)
    {
        if (!_edits.TryGetValue(component, out var e))
        {
            e = _make(component, readStored);
            if (component == ModelFolder.VaeEncoder && e.Output == null) e = e with { Output = Folder.RequireVaeEncoder().VaeMoments() };
            _edits[component] = e;
        }
        return e;
    }

    /// <summary>Drops cached merged weights (end of a round).</summary>
    public void Release() => _edits.Clear();
}
