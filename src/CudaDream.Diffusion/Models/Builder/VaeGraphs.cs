using CudaDream.Engine.Formats;
using CudaDream.Engine.Tensors;

namespace CudaDream.Diffusion.Models.Builder;

/// <summary>
/// diffusers <c>AutoencoderKL</c> halves as ONNX graphs. The encoder graph outputs
/// <c>latent_sample</c> (mean + std·RandomNormalLike, what diffusers' ONNX pipeline expects) and
/// <c>moments</c> (the quant_conv output [B, 2·latent, h, w]), so that latent caching can use the
/// deterministic moments. The decoder is <c>vae.decode</c> without the 1/scaling_factor step.
/// Weight keys are the AutoencoderKL state-dict keys (<c>encoder.…</c>, <c>quant_conv.…</c>, …).
/// </summary>
public sealed class VaeGraphs : GraphLayers
{
    private readonly VaeConfig _c;

    private VaeGraphs(string name, VaeConfig config, IWeightSource? weights, GraphBuildOptions options)
        : base(name, weights, options) => _c = config;

    public static BuiltGraph BuildEncoder(VaeConfig config, IWeightSource? weights, GraphBuildOptions? options = null) =>
        new VaeGraphs("vae_encoder", config, weights, options ?? new GraphBuildOptions()).Encoder();

    public static BuiltGraph BuildDecoder(VaeConfig config, IWeightSource? weights, GraphBuildOptions? options = null) =>
        new VaeGraphs("vae_decoder", config, weights, options ?? new GraphBuildOptions()).Decoder();

    /// <summary>
    /// Encoder and decoder in one graph, <c>sample</c> → the posterior mean → <c>reconstruction</c>: what an autoencoder is
    /// trained as (pretrain-tiny). Its weight keys are the two halves' keys, so the trained tensors drop into either graph.
    /// </summary>
    public static BuiltGraph BuildAutoencoder(VaeConfig config, IWeightSource? weights, GraphBuildOptions? options = null) =>
        new VaeGraphs("vae_autoencoder", config, weights, options ?? new GraphBuildOptions()).Autoencoder();

    private BuiltGraph Autoencoder()
    {
        G.AddInput("sample", F, "batch", "channels", "height", "width");
        var moments = EncodeMoments("sample");
        string mean;
        using (Scope("latent_dist")) mean = G.Op("Slice", moments, Ints(0), Ints(_c.LatentChannels), Ints(1));
        G.AddOutput("reconstruction", Decode(mean), F, "batch", _c.OutChannels, "image_height", "image_width");
        return Finish("VAE autoencoder");
    }

    private BuiltGraph Encoder()
    {
        G.AddInput("sample", F, "batch", "channels", "height", "width");
        var moments = EncodeMoments("sample");

        // DiagonalGaussianDistribution(moments).sample()
        string latent;
        using (Scope("latent_dist"))
        {
            int l = _c.LatentChannels;
            var mean = G.Op("Slice", moments, Ints(0), Ints(l), Ints(1));
            var logvar = G.Op("Slice", moments, Ints(l), Ints(2L * l), Ints(1));
            logvar = G.Op("Clip", logvar, Scalar(-30f), Scalar(20f));
            var std = G.Op("Exp", G.Op("Mul", logvar, Scalar(0.5f)));
            var noise = G.Op("RandomNormalLike", [mean], new OnnxAttribute("dtype", (long)F.ToOnnx()));
            latent = G.Op("Add", mean, G.Op("Mul", std, noise));
        }
        G.AddOutput("latent_sample", latent, F, "batch", _c.LatentChannels, "latent_height", "latent_width");
        G.AddOutput("moments", moments, F, "batch", 2 * _c.LatentChannels, "latent_height", "latent_width");
        return Finish("VAE encoder");
    }

    /// <summary>encoder.* and quant_conv: image → moments [B, 2·latent, h, w].</summary>
    private string EncodeMoments(string input)
    {
        var ch = _c.BlockOutChannels;
        string x;
        using (Scope("encoder"))
        {
            x = Conv(input, "conv_in", _c.InChannels, ch[0], 3);
            int channels = ch[0];
            for (int i = 0; i < ch.Length; i++)
            {
                using var _ = Scope($"down_blocks.{i}");
                for (int j = 0; j < _c.LayersPerBlock; j++)
                    x = Resnet(x, $"resnets.{j}", j == 0 ? channels : ch[i], ch[i]);
                channels = ch[i];
                if (i < ch.Length - 1) x = Downsample(x, "downsamplers.0", channels);
            }
            x = MidBlock(x, channels);
            x = GroupNorm(x, "conv_norm_out", channels, _c.NormGroups, VaeConfig.NormEps);
            x = SiLU(x, "conv_act");
            x = Conv(x, "conv_out", channels, 2 * _c.LatentChannels, 3);
        }
        return Conv(x, "quant_conv", 2 * _c.LatentChannels, 2 * _c.LatentChannels, 1);
    }

    private BuiltGraph Decoder()
    {
        G.AddInput("latent_sample", F, "batch", "channels", "height", "width");
        G.AddOutput("sample", Decode("latent_sample"), F, "batch", _c.OutChannels, "image_height", "image_width");
        return Finish("VAE decoder");
    }

    /// <summary>post_quant_conv and decoder.*: latent → image.</summary>
    private string Decode(string latent)
    {
        var ch = _c.BlockOutChannels;
        var x = Conv(latent, "post_quant_conv", _c.LatentChannels, _c.LatentChannels, 1);
        using (Scope("decoder"))
        {
            int channels = ch[^1];
            x = Conv(x, "conv_in", _c.LatentChannels, channels, 3);
            x = MidBlock(x, channels);
            var reversed = ch.Reverse().ToArray();
            for (int i = 0; i < reversed.Length; i++)
            {
                using var _ = Scope($"up_blocks.{i}");
                for (int j = 0; j <= _c.LayersPerBlock; j++)
                    x = Resnet(x, $"resnets.{j}", j == 0 ? channels : reversed[i], reversed[i]);
                channels = reversed[i];
                if (i < reversed.Length - 1) x = Upsample2x(x, "upsamplers.0", channels);
            }
            x = GroupNorm(x, "conv_norm_out", channels, _c.NormGroups, VaeConfig.NormEps);
            x = SiLU(x, "conv_act");
            x = Conv(x, "conv_out", channels, _c.OutChannels, 3);
        }
        return x;
    }

    /// <summary>UNetMidBlock2D: resnet → single-head self-attention with group norm → resnet.</summary>
    private string MidBlock(string x, int channels)
    {
        using var _ = Scope("mid_block");
        x = Resnet(x, "resnets.0", channels, channels);
        x = SpatialAttention(x, "attentions.0", channels);
        return Resnet(x, "resnets.1", channels, channels);
    }

    /// <summary>ResnetBlock2D without a time embedding (eps 1e-6).</summary>
    private string Resnet(string x, string module, int inCh, int outCh)
    {
        using var _ = Scope(module);
        var h = GroupNorm(x, "norm1", inCh, _c.NormGroups, VaeConfig.NormEps);
        h = SiLU(h);
        h = Conv(h, "conv1", inCh, outCh, 3);
        h = GroupNorm(h, "norm2", outCh, _c.NormGroups, VaeConfig.NormEps);
        h = SiLU(h);
        h = Conv(h, "conv2", outCh, outCh, 3);
        var shortcut = inCh != outCh ? Conv(x, "conv_shortcut", inCh, outCh, 1) : x;
        return G.Op("Add", shortcut, h);
    }

    /// <summary>
    /// diffusers <c>Attention</c> on a feature map (one head, biased projections, softmax upcast to fp32):
    /// group_norm → [B, HW, C] → attention → to_out.0 → back to [B, C, H, W] → + input.
    /// </summary>
    private string SpatialAttention(string x, string module, int channels)
    {
        using var _ = Scope(module);
        var h = GroupNorm(x, "group_norm", channels, _c.NormGroups, VaeConfig.NormEps);
        h = G.Op("Reshape", h, Ints(0, channels, -1));
        h = G.Op("Transpose", [h], new OnnxAttribute("perm", new long[] { 0, 2, 1 }));
        // One head, split and merged all the same as diffusers' Attention does (the pattern the engine fuses).
        var n = ShapeOf(h, 1, 2);
        var q = SplitHeads(Linear(h, "to_q", channels, channels), n, 1, channels);
        var k = SplitHeads(Linear(h, "to_k", channels, channels), n, 1, channels);
        var v = SplitHeads(Linear(h, "to_v", channels, channels), n, 1, channels);
        var o = MergeHeads(Sdpa(q, k, v, channels, upcastSoftmax: true), n, 1, channels);
        o = Linear(o, "to_out.0", channels, channels);
        o = G.Op("Transpose", [o], new OnnxAttribute("perm", new long[] { 0, 2, 1 }));
        o = G.Op("Reshape", o, G.Op("Shape", x));
        return G.Op("Add", o, x);
    }

    /// <summary>VAE Downsample2D: Pad(0, +1 right and bottom) → Conv 3×3 stride 2, no padding.</summary>
    private string Downsample(string x, string module, int channels)
    {
        using var _ = Scope(module);
        var padded = G.Op("Pad", [x, Ints(0, 0, 0, 0, 0, 0, 1, 1), Scalar(0f)], new OnnxAttribute("mode", "constant"));
        return Conv(padded, "conv", channels, channels, 3, stride: 2, padding: 0);
    }

    /// <summary>Upsample2D without a target size: Resize(nearest, ×2) → Conv 3×3.</summary>
    private string Upsample2x(string x, string module, int channels)
    {
        using var _ = Scope(module);
        var scales = G.Constant(Tensor.FromArray(new[] { 1f, 1f, 2f, 2f }, 4));
        var up = G.Op("Resize", [x, "", scales],
            new OnnxAttribute("coordinate_transformation_mode", "asymmetric"), new OnnxAttribute("cubic_coeff_a", -0.75f),
            new OnnxAttribute("mode", "nearest"), new OnnxAttribute("nearest_mode", "floor"));
        return Conv(up, "conv", channels, channels, 3);
    }
}
