using CudaDream.Engine.Tensors;

namespace CudaDream.Engine.Training.Lora;

/// <summary>
/// A module a LoRA may adapt: the network it belongs to (<see cref="LoraComponents"/>), its module path
/// (diffusers/transformers, e.g. <c>down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q</c>) and
/// the shape of its weight ([out, in] for a linear, [out, in, k, k] for a conv).
/// </summary>
public sealed record LoraTarget(string Component, string ModulePath, int[] WeightShape);

/// <summary>The networks LoRA files address.</summary>
public static class LoraComponents
{
    public const string UNet = "unet";
    public const string TextEncoder = "text_encoder";
}

/// <summary>
/// One low-rank adapter: ΔW = (Alpha / Rank) · Up @ Down (Hu et al. 2021, eq. 3, with kohya's alpha
/// scaling). Linear: Down [r, in], Up [out, r]. Conv: Down [r, in, k, k], Up [out, r, 1, 1].
/// Down and Up are given in the target's layout (a 1×1 conv adapter for a linear target is reshaped).
/// </summary>
public sealed record LoraAdapter(string ModulePath, string Component, Tensor Down, Tensor Up, float Alpha, int Rank)
{
    public float Scale => Alpha / Rank;
}

/// <summary>What a LoRA file resolved to against a model; keys that matched nothing are listed, never dropped silently.</summary>
public sealed record LoraLoadResult(IReadOnlyList<LoraAdapter> Adapters, IReadOnlyList<string> UnmatchedKeys, IReadOnlyDictionary<string, string> Metadata);
