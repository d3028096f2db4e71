using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace CudaDream.TorchBench.Model;

/// <summary>
/// A linear layer y = x·Wᵀ + b that can carry a LoRA branch, y += (alpha / rank) · up(down(x)), as diffusers'
/// <c>LoRACompatibleLinear</c> with a <c>LoRALinearLayer</c> set: the frozen W is used as is (W_eff = W + scale·up@down
/// is never formed), and the adapter's parameters are named <c>lora_down.weight</c> ([rank, in]) and
/// <c>lora_up.weight</c> ([out, rank]) beside the layer's own <c>weight</c> and <c>bias</c>, as LoRA files name them.
/// </summary>
public sealed class AdaptableLinear : nn.Module<Tensor, Tensor>
{
    protected override void RegisterComponents() { } // see UNetBlocks.cs: children are registered by hand

    private readonly Parameter _weight;
    private readonly Parameter? _bias;
    private Linear? _loraDown;
    private Linear? _loraUp;
    private double _loraScale;

    public AdaptableLinear(long inFeatures, long outFeatures, bool hasBias) : base(nameof(AdaptableLinear))
    {
        InFeatures = inFeatures;
        OutFeatures = outFeatures;
        // The values are placeholders: every weight is overwritten from the model folder before use.
        _weight = new Parameter(empty(outFeatures, inFeatures));
        register_parameter("weight", _weight);
        if (hasBias)
        {
            _bias = new Parameter(empty(outFeatures));
            register_parameter("bias", _bias);
        }
    }

    public long InFeatures { get; }
    public long OutFeatures { get; }
    public bool HasLora => _loraDown != null;

    /// <summary>Attaches a rank-<paramref name="rank"/> adapter with the given down [rank, in] and up [out, rank] values (trainable).</summary>
    public void AttachLora(int rank, double alpha, Tensor down, Tensor up)
    {
        if (HasLora) throw new InvalidOperationException("this layer already has a LoRA branch");
        if (!down.shape.SequenceEqual(new[] { rank, InFeatures }) || !up.shape.SequenceEqual(new[] { OutFeatures, rank }))
            throw new ArgumentException($"LoRA down/up must be [{rank},{InFeatures}] and [{OutFeatures},{rank}]");
        _loraDown = nn.Linear(InFeatures, rank, hasBias: false);
        _loraUp = nn.Linear(rank, OutFeatures, hasBias: false);
        using (no_grad())
        {
            _loraDown.weight!.copy_(down);
            _loraUp.weight!.copy_(up);
        }
        _loraScale = alpha / rank;
        register_module("lora_down", _loraDown);
        register_module("lora_up", _loraUp);
    }

    public override Tensor forward(Tensor x)
    {
        var y = nn.functional.linear(x, _weight, _bias);
        if (_loraDown == null) return y;
        return y + _loraScale * _loraUp!.forward(_loraDown.forward(x));
    }
}
