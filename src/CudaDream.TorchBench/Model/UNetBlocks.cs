using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace CudaDream.TorchBench.Model;

// The building blocks of diffusers' UNet2DConditionModel for the SD 1.x family, written from the architecture.
// Every module registers its children under the attribute names diffusers uses, so that named_parameters()
// yields exactly the diffusers state-dict keys (down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight, …)
// and weights load by key. Each module registers its children itself, under those names, and turns TorchSharp's
// RegisterComponents off: that reflection over fields would register every child a second time under its C# field
// name (and it runs on every module passed to register_module).

/// <summary>diffusers <c>TimestepEmbedding</c>: linear_1 → SiLU → linear_2.</summary>
public sealed class TimestepEmbedding : nn.Module<Tensor, Tensor>
{
    protected override void RegisterComponents() { } // see the file header: children are registered by hand

    private readonly AdaptableLinear _linear1;
    private readonly AdaptableLinear _linear2;

    public TimestepEmbedding(long inChannels, long timeEmbedDim) : base(nameof(TimestepEmbedding))
    {
        _linear1 = new AdaptableLinear(inChannels, timeEmbedDim, hasBias: true);
        _linear2 = new AdaptableLinear(timeEmbedDim, timeEmbedDim, hasBias: true);
        register_module("linear_1", _linear1);
        register_module("linear_2", _linear2);
    }

    public override Tensor forward(Tensor x) => _linear2.forward(F.silu(_linear1.forward(x)));
}

/// <summary>
/// diffusers <c>ResnetBlock2D</c> (time_embedding_norm "default", output_scale_factor 1): GroupNorm → SiLU → conv1,
/// plus the time embedding projected by SiLU → time_emb_proj and broadcast over the pixels, GroupNorm → SiLU → conv2,
/// added to the input (through a 1×1 conv_shortcut when the channel count changes).
/// </summary>
public sealed class ResnetBlock2D : nn.Module<Tensor, Tensor, Tensor>
{
    protected override void RegisterComponents() { } // see the file header: children are registered by hand

    private readonly GroupNorm _norm1;
    private readonly Conv2d _conv1;
    private readonly AdaptableLinear _timeEmbProj;
    private readonly GroupNorm _norm2;
    private readonly Conv2d _conv2;
    private readonly Conv2d? _convShortcut;

    public ResnetBlock2D(long inChannels, long outChannels, long timeEmbedDim, long groups, double eps) : base(nameof(ResnetBlock2D))
    {
        _norm1 = nn.GroupNorm(groups, inChannels, eps);
        _conv1 = nn.Conv2d(inChannels, outChannels, 3, padding: 1);
        _timeEmbProj = new AdaptableLinear(timeEmbedDim, outChannels, hasBias: true);
        _norm2 = nn.GroupNorm(groups, outChannels, eps);
        _conv2 = nn.Conv2d(outChannels, outChannels, 3, padding: 1);
        register_module("norm1", _norm1);
        register_module("conv1", _conv1);
        register_module("time_emb_proj", _timeEmbProj);
        register_module("norm2", _norm2);
        register_module("conv2", _conv2);
        if (inChannels != outChannels)
        {
            _convShortcut = nn.Conv2d(inChannels, outChannels, 1);
            register_module("conv_shortcut", _convShortcut);
        }
    }

    public override Tensor forward(Tensor x, Tensor timeEmbedding)
    {
        var h = _conv1.forward(F.silu(_norm1.forward(x)));
        var t = _timeEmbProj.forward(F.silu(timeEmbedding));
        h = h + t.unsqueeze(-1).unsqueeze(-1);
        h = _conv2.forward(F.silu(_norm2.forward(h)));
        var shortcut = _convShortcut?.forward(x) ?? x;
        return shortcut + h;
    }
}

/// <summary>
/// diffusers <c>Attention</c> with the default processor: to_q from the hidden states, to_k/to_v from the context
/// (the hidden states themselves for self-attention), no biases on q/k/v, softmax(QKᵀ/√d)V per head by
/// <c>scaled_dot_product_attention</c> (what diffusers' AttnProcessor2_0 calls on PyTorch 2), then to_out.0 with bias.
/// </summary>
public sealed class Attention : nn.Module<Tensor, Tensor?, Tensor>
{
    protected override void RegisterComponents() { } // see the file header: children are registered by hand

    private readonly long _heads;
    private readonly AdaptableLinear _toQ;
    private readonly AdaptableLinear _toK;
    private readonly AdaptableLinear _toV;
    private readonly AdaptableLinear _toOut;

    public Attention(long queryDim, long contextDim, long heads, long headDim) : base(nameof(Attention))
    {
        _heads = heads;
        long inner = heads * headDim;
        _toQ = new AdaptableLinear(queryDim, inner, hasBias: false);
        _toK = new AdaptableLinear(contextDim, inner, hasBias: false);
        _toV = new AdaptableLinear(contextDim, inner, hasBias: false);
        _toOut = new AdaptableLinear(inner, queryDim, hasBias: true);
        register_module("to_q", _toQ);
        register_module("to_k", _toK);
        register_module("to_v", _toV);
        // diffusers' to_out is [Linear, Dropout]; the dropout (p = 0) has no parameters and does nothing here.
        register_module("to_out", nn.ModuleList<nn.Module<Tensor, Tensor>>(_toOut, nn.Dropout(0.0)));
    }

    public override Tensor forward(Tensor x, Tensor? context)
    {
        context ??= x;
        long batch = x.shape[0], queries = x.shape[1], keys = context.shape[1];
        Tensor Heads(Tensor t, long n) => t.view(batch, n, _heads, -1).transpose(1, 2); // [B, heads, n, d]
        var q = Heads(_toQ.forward(x), queries);
        var k = Heads(_toK.forward(context), keys);
        var v = Heads(_toV.forward(context), keys);
        var o = F.scaled_dot_product_attention(q, k, v);
        o = o.transpose(1, 2).reshape(batch, queries, -1);
        return _toOut.forward(o);
    }
}

/// <summary>diffusers <c>GEGLU</c>: one projection to twice the width, split into (hidden, gate), hidden · GELU(gate) (exact, erf).</summary>
public sealed class Geglu : nn.Module<Tensor, Tensor>
{
    protected override void RegisterComponents() { } // see the file header: children are registered by hand

    private readonly AdaptableLinear _proj;

    public Geglu(long dim, long innerDim) : base(nameof(Geglu))
    {
        _proj = new AdaptableLinear(dim, innerDim * 2, hasBias: true);
        register_module("proj", _proj);
    }

    public override Tensor forward(Tensor x)
    {
        var halves = _proj.forward(x).chunk(2, -1);
        return halves[0] * F.gelu(halves[1]);
    }
}

/// <summary>diffusers <c>BasicTransformerBlock</c> (layer_norm): x += attn1(norm1(x)); x += attn2(norm2(x), context); x += ff(norm3(x)).</summary>
public sealed class BasicTransformerBlock : nn.Module<Tensor, Tensor, Tensor>
{
    protected override void RegisterComponents() { } // see the file header: children are registered by hand

    private readonly LayerNorm _norm1, _norm2, _norm3;
    private readonly Attention _attn1, _attn2;
    private readonly ModuleList<nn.Module<Tensor, Tensor>> _ff;

    public BasicTransformerBlock(long dim, long heads, long headDim, long contextDim) : base(nameof(BasicTransformerBlock))
    {
        _norm1 = nn.LayerNorm(dim, 1e-5);
        _attn1 = new Attention(dim, dim, heads, headDim);
        _norm2 = nn.LayerNorm(dim, 1e-5);
        _attn2 = new Attention(dim, contextDim, heads, headDim);
        _norm3 = nn.LayerNorm(dim, 1e-5);
        // FeedForward(dim, mult 4, geglu): net = [GEGLU, Dropout, Linear], so the output layer is "ff.net.2".
        _ff = nn.ModuleList<nn.Module<Tensor, Tensor>>(new Geglu(dim, 4 * dim), nn.Dropout(0.0), new AdaptableLinear(4 * dim, dim, hasBias: true));
        var ff = new FeedForwardContainer(_ff);
        register_module("norm1", _norm1);
        register_module("attn1", _attn1);
        register_module("norm2", _norm2);
        register_module("attn2", _attn2);
        register_module("norm3", _norm3);
        register_module("ff", ff);
    }

    public override Tensor forward(Tensor x, Tensor context)
    {
        x = _attn1.forward(_norm1.forward(x), null) + x;
        x = _attn2.forward(_norm2.forward(x), context) + x;
        var h = _norm3.forward(x);
        foreach (var layer in _ff) h = layer.forward(h);
        return h + x;
    }

    /// <summary>diffusers' <c>FeedForward</c> holds its layers in a list named <c>net</c>.</summary>
    private sealed class FeedForwardContainer : nn.Module
    {
        protected override void RegisterComponents() { } // see the file header: children are registered by hand

        public FeedForwardContainer(ModuleList<nn.Module<Tensor, Tensor>> net) : base("FeedForward") => register_module("net", net);
    }
}

/// <summary>
/// diffusers <c>Transformer2DModel</c> on image features with one block: GroupNorm (eps 1e-6) → proj_in → tokens
/// [B, H·W, C] → BasicTransformerBlock → proj_out → back to [B, C, H, W], plus the input. proj_in/proj_out are 1×1
/// convs, or linears on the tokens when the config's <c>use_linear_projection</c> is set.
/// </summary>
public sealed class Transformer2DModel : nn.Module<Tensor, Tensor, Tensor>
{
    protected override void RegisterComponents() { } // see the file header: children are registered by hand

    private readonly bool _linearProjection;
    private readonly GroupNorm _norm;
    private readonly nn.Module<Tensor, Tensor> _projIn, _projOut;
    private readonly BasicTransformerBlock _block;

    public Transformer2DModel(long channels, long heads, long contextDim, long groups, bool useLinearProjection) : base(nameof(Transformer2DModel))
    {
        _linearProjection = useLinearProjection;
        long headDim = channels / heads;
        _norm = nn.GroupNorm(groups, channels, 1e-6);
        _projIn = useLinearProjection ? new AdaptableLinear(channels, channels, hasBias: true) : nn.Conv2d(channels, channels, 1);
        _block = new BasicTransformerBlock(channels, heads, headDim, contextDim);
        _projOut = useLinearProjection ? new AdaptableLinear(channels, channels, hasBias: true) : nn.Conv2d(channels, channels, 1);
        register_module("norm", _norm);
        register_module("proj_in", _projIn);
        register_module("transformer_blocks", nn.ModuleList(_block));
        register_module("proj_out", _projOut);
    }

    public override Tensor forward(Tensor x, Tensor context)
    {
        long b = x.shape[0], c = x.shape[1], height = x.shape[2], width = x.shape[3];
        var h = _norm.forward(x);
        Tensor ToTokens(Tensor t) => t.permute(0, 2, 3, 1).reshape(b, height * width, -1);
        Tensor ToImage(Tensor t) => t.reshape(b, height, width, -1).permute(0, 3, 1, 2);
        h = _linearProjection ? _projIn.forward(ToTokens(h)) : ToTokens(_projIn.forward(h));
        h = _block.forward(h, context);
        h = _linearProjection ? ToImage(_projOut.forward(h)) : _projOut.forward(ToImage(h).contiguous());
        return h + x;
    }
}

/// <summary>diffusers <c>Downsample2D</c> with a conv: 3×3, stride 2, padding <c>downsample_padding</c>.</summary>
public sealed class Downsample2D : nn.Module<Tensor, Tensor>
{
    protected override void RegisterComponents() { } // see the file header: children are registered by hand

    private readonly Conv2d _conv;

    public Downsample2D(long channels, long padding) : base(nameof(Downsample2D))
    {
        _conv = nn.Conv2d(channels, channels, 3, stride: 2, padding: padding);
        register_module("conv", _conv);
    }

    public override Tensor forward(Tensor x) => _conv.forward(x);
}

/// <summary>
/// diffusers <c>Upsample2D</c> with a conv: nearest-neighbour ×2 (or to the given size, diffusers' <c>upsample_size</c>
/// when the latent size is not a multiple of the UNet's total downsampling), then a 3×3 conv.
/// </summary>
public sealed class Upsample2D : nn.Module<Tensor, long[]?, Tensor>
{
    protected override void RegisterComponents() { } // see the file header: children are registered by hand

    private readonly Conv2d _conv;

    public Upsample2D(long channels) : base(nameof(Upsample2D))
    {
        _conv = nn.Conv2d(channels, channels, 3, padding: 1);
        register_module("conv", _conv);
    }

    public override Tensor forward(Tensor x, long[]? size)
    {
        var up = size == null
            ? F.interpolate(x, scale_factor: [2.0, 2.0], mode: InterpolationMode.Nearest)
            : F.interpolate(x, size: size, mode: InterpolationMode.Nearest);
        return _conv.forward(up);
    }
}
