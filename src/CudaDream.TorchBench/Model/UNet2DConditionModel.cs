using CudaDream.Diffusion.Models.Builder;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace CudaDream.TorchBench.Model;

/// <summary>
/// diffusers <c>CrossAttnDownBlock2D</c> (with attentions) or <c>DownBlock2D</c>: per layer a resnet, then a
/// transformer when the block has attention; every layer's output, and the downsampler's, is a skip connection.
/// </summary>
public sealed class UNetDownBlock : nn.Module
{
    protected override void RegisterComponents() { } // see UNetBlocks.cs: children are registered by hand

    private readonly ModuleList<ResnetBlock2D> _resnets = nn.ModuleList<ResnetBlock2D>();
    private readonly ModuleList<Transformer2DModel>? _attentions;
    private readonly Downsample2D? _downsampler;

    public UNetDownBlock(UNetConfig c, int level, long inChannels) : base(nameof(UNetDownBlock))
    {
        long outChannels = c.BlockOutChannels[level];
        bool attention = c.DownHasAttention(level);
        if (attention) _attentions = nn.ModuleList<Transformer2DModel>();
        for (int j = 0; j < c.LayersPerBlock; j++)
        {
            _resnets.append(new ResnetBlock2D(j == 0 ? inChannels : outChannels, outChannels, c.TimeEmbedDim, c.NormGroups, c.NormEps));
            _attentions?.append(new Transformer2DModel(outChannels, c.AttentionHeads[level], c.CrossAttentionDim, c.NormGroups, c.UseLinearProjection));
        }
        register_module("resnets", _resnets);
        if (_attentions != null) register_module("attentions", _attentions);
        if (level < c.BlockOutChannels.Length - 1)
        {
            _downsampler = new Downsample2D(outChannels, c.DownsamplePadding);
            register_module("downsamplers", nn.ModuleList(_downsampler));
        }
    }

    public Tensor Forward(Tensor h, Tensor timeEmbedding, Tensor context, List<Tensor> skips)
    {
        for (int j = 0; j < _resnets.Count; j++)
        {
            h = _resnets[j].forward(h, timeEmbedding);
            if (_attentions != null) h = _attentions[j].forward(h, context);
            skips.Add(h);
        }
        if (_downsampler != null)
        {
            h = _downsampler.forward(h);
            skips.Add(h);
        }
        return h;
    }
}

/// <summary>diffusers <c>UNetMidBlock2DCrossAttn</c>: resnet, transformer, resnet.</summary>
public sealed class UNetMidBlock : nn.Module
{
    protected override void RegisterComponents() { } // see UNetBlocks.cs: children are registered by hand

    private readonly ModuleList<ResnetBlock2D> _resnets;
    private readonly Transformer2DModel _attention;

    public UNetMidBlock(UNetConfig c) : base(nameof(UNetMidBlock))
    {
        long channels = c.BlockOutChannels[^1];
        _resnets = nn.ModuleList(
            new ResnetBlock2D(channels, channels, c.TimeEmbedDim, c.NormGroups, c.NormEps),
            new ResnetBlock2D(channels, channels, c.TimeEmbedDim, c.NormGroups, c.NormEps));
        _attention = new Transformer2DModel(channels, c.AttentionHeads[^1], c.CrossAttentionDim, c.NormGroups, c.UseLinearProjection);
        register_module("attentions", nn.ModuleList(_attention));
        register_module("resnets", _resnets);
    }

    public Tensor Forward(Tensor h, Tensor timeEmbedding, Tensor context)
    {
        h = _resnets[0].forward(h, timeEmbedding);
        h = _attention.forward(h, context);
        return _resnets[1].forward(h, timeEmbedding);
    }
}

/// <summary>
/// diffusers <c>CrossAttnUpBlock2D</c> / <c>UpBlock2D</c>: layers_per_block + 1 layers, each concatenating the last
/// skip connection to the features (channels first the features', then the skip's) before its resnet (and
/// transformer), then an upsampler unless this is the last block.
/// </summary>
public sealed class UNetUpBlock : nn.Module
{
    protected override void RegisterComponents() { } // see UNetBlocks.cs: children are registered by hand

    private readonly ModuleList<ResnetBlock2D> _resnets = nn.ModuleList<ResnetBlock2D>();
    private readonly ModuleList<Transformer2DModel>? _attentions;
    private readonly Upsample2D? _upsampler;

    /// <param name="level">Index in up_blocks (0 = the deepest).</param>
    /// <param name="previousOutChannels">Channels coming from the block below (the mid block for level 0).</param>
    public UNetUpBlock(UNetConfig c, int level, long previousOutChannels) : base(nameof(UNetUpBlock))
    {
        int n = c.BlockOutChannels.Length;
        var reversed = c.BlockOutChannels.Reverse().ToArray();
        var reversedHeads = c.AttentionHeads.Reverse().ToArray();
        long outChannels = reversed[level];
        long skipBlockChannels = reversed[Math.Min(level + 1, n - 1)];
        if (c.UpHasAttention(level)) _attentions = nn.ModuleList<Transformer2DModel>();
        int layers = c.LayersPerBlock + 1;
        for (int j = 0; j < layers; j++)
        {
            // The last layer takes the skip from the level above (its conv_in or downsampler output), the others this level's.
            long skipChannels = j == layers - 1 ? skipBlockChannels : outChannels;
            long resnetIn = (j == 0 ? previousOutChannels : outChannels) + skipChannels;
            _resnets.append(new ResnetBlock2D(resnetIn, outChannels, c.TimeEmbedDim, c.NormGroups, c.NormEps));
            _attentions?.append(new Transformer2DModel(outChannels, reversedHeads[level], c.CrossAttentionDim, c.NormGroups, c.UseLinearProjection));
        }
        register_module("resnets", _resnets);
        if (_attentions != null) register_module("attentions", _attentions);
        if (level < n - 1)
        {
            _upsampler = new Upsample2D(outChannels);
            register_module("upsamplers", nn.ModuleList(_upsampler));
        }
    }

    public int Layers => _resnets.Count;

    /// <param name="skips">This block's skip connections, first-pushed first; they are taken from the end.</param>
    /// <param name="upsampleSize">The spatial size to upsample to, or null for ×2.</param>
    public Tensor Forward(Tensor h, Tensor timeEmbedding, Tensor context, IReadOnlyList<Tensor> skips, long[]? upsampleSize)
    {
        for (int j = 0; j < _resnets.Count; j++)
        {
            h = cat([h, skips[skips.Count - 1 - j]], 1);
            h = _resnets[j].forward(h, timeEmbedding);
            if (_attentions != null) h = _attentions[j].forward(h, context);
        }
        return _upsampler?.forward(h, upsampleSize) ?? h;
    }
}

/// <summary>
/// diffusers <c>UNet2DConditionModel</c> for the SD 1.x family (what <see cref="UNetConfig"/> accepts): sinusoidal
/// timestep projection (flip_sin_to_cos, freq_shift from the config) → time_embedding; conv_in; down blocks; mid
/// block; up blocks with the skip connections; GroupNorm → SiLU → conv_out.
/// Inputs: sample [B, in_channels, h, w], timestep [B] (or one value for the whole batch), encoder_hidden_states
/// [B, tokens, cross_attention_dim]; output [B, out_channels, h, w].
/// </summary>
public sealed class UNet2DConditionModel : nn.Module<Tensor, Tensor, Tensor, Tensor>
{
    protected override void RegisterComponents() { } // see UNetBlocks.cs: children are registered by hand

    private readonly UNetConfig _config;
    private readonly TimestepEmbedding _timeEmbedding;
    private readonly Conv2d _convIn;
    private readonly ModuleList<UNetDownBlock> _down = nn.ModuleList<UNetDownBlock>();
    private readonly UNetMidBlock _mid;
    private readonly ModuleList<UNetUpBlock> _up = nn.ModuleList<UNetUpBlock>();
    private readonly GroupNorm _convNormOut;
    private readonly Conv2d _convOut;

    public UNet2DConditionModel(UNetConfig config) : base(nameof(UNet2DConditionModel))
    {
        config.Validate("UNet config");
        _config = config;
        var channels = config.BlockOutChannels;
        int n = channels.Length;
        _timeEmbedding = new TimestepEmbedding(channels[0], config.TimeEmbedDim);
        _convIn = nn.Conv2d(config.InChannels, channels[0], 3, padding: 1);
        long previous = channels[0];
        for (int i = 0; i < n; i++)
        {
            _down.append(new UNetDownBlock(config, i, previous));
            previous = channels[i];
        }
        _mid = new UNetMidBlock(config);
        previous = channels[^1];
        for (int i = 0; i < n; i++)
        {
            _up.append(new UNetUpBlock(config, i, previous));
            previous = channels[n - 1 - i];
        }
        _convNormOut = nn.GroupNorm(config.NormGroups, channels[0], config.NormEps);
        _convOut = nn.Conv2d(channels[0], config.OutChannels, 3, padding: 1);
        register_module("time_embedding", _timeEmbedding);
        register_module("conv_in", _convIn);
        register_module("down_blocks", _down);
        register_module("mid_block", _mid);
        register_module("up_blocks", _up);
        register_module("conv_norm_out", _convNormOut);
        register_module("conv_out", _convOut);
    }

    public UNetConfig Config => _config;

    /// <summary>
    /// diffusers' <c>get_timestep_embedding</c>: half = dim/2 frequencies exp(−ln(10000)·k / (half − freq_shift)),
    /// the timesteps times each, [sin, cos] — or [cos, sin] with flip_sin_to_cos.
    /// </summary>
    public static Tensor TimestepProjection(Tensor timesteps, long dim, bool flipSinToCos, double freqShift)
    {
        long half = dim / 2;
        var exponent = arange(0, half, dtype: ScalarType.Float32) * (-Math.Log(10000.0)) / (half - freqShift);
        var angles = timesteps.to_type(ScalarType.Float32).unsqueeze(1) * exp(exponent).unsqueeze(0);
        var emb = flipSinToCos ? cat([cos(angles), sin(angles)], -1) : cat([sin(angles), cos(angles)], -1);
        return dim % 2 == 1 ? F.pad(emb, [0, 1]) : emb;
    }

    public override Tensor forward(Tensor sample, Tensor timestep, Tensor encoderHiddenStates)
    {
        long batch = sample.shape[0];
        var t = timestep.dim() == 0 ? timestep.reshape(1) : timestep;
        t = t.expand(batch);
        var timeEmbedding = _timeEmbedding.forward(TimestepProjection(t, _config.BlockOutChannels[0], _config.FlipSinToCos, _config.FreqShift));

        int n = _config.BlockOutChannels.Length;
        // With n − 1 upsamplers, a latent size that is not a multiple of 2^(n−1) cannot be recovered by ×2 steps;
        // diffusers then upsamples to the skip connection's size instead.
        long factor = 1L << (n - 1);
        bool upsampleToSkipSize = sample.shape[2] % factor != 0 || sample.shape[3] % factor != 0;

        var h = _convIn.forward(sample);
        var skips = new List<Tensor> { h };
        foreach (var block in _down) h = block.Forward(h, timeEmbedding, encoderHiddenStates, skips);
        h = _mid.Forward(h, timeEmbedding, encoderHiddenStates);
        for (int i = 0; i < n; i++)
        {
            var block = _up[i];
            var mine = skips.GetRange(skips.Count - block.Layers, block.Layers);
            skips.RemoveRange(skips.Count - block.Layers, block.Layers);
            long[]? size = upsampleToSkipSize && i < n - 1 ? [skips[^1].shape[2], skips[^1].shape[3]] : null;
            h = block.Forward(h, timeEmbedding, encoderHiddenStates, mine, size);
        }
        return _convOut.forward(F.silu(_convNormOut.forward(h)));
    }
}
