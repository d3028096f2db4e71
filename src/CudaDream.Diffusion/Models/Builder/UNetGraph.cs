using CudaDream.Engine.Formats;
using CudaDream.Engine.Tensors;

namespace CudaDream.Diffusion.Models.Builder;

/// <summary>
/// diffusers <c>UNet2DConditionModel</c> (SD 1.x family) as an ONNX graph: inputs <c>sample</c>
/// [batch, channels, height, width], <c>timestep</c> [batch] (a [1] timestep is expanded to the batch),
/// <c>encoder_hidden_states</c> [batch, sequence, cross_attention_dim]; output <c>out_sample</c>.
/// Upsampling resizes to the size of the skip connection it is concatenated with, so any latent size
/// works (diffusers' <c>upsample_size</c>), not only multiples of 2^levels.
/// </summary>
public sealed class UNetGraph : GraphLayers
{
    private readonly UNetConfig _c;
    private string _temb = "";
    private string? _tembActivated;
    private string _context = "";

    private UNetGraph(UNetConfig config, IWeightSource? weights, GraphBuildOptions options)
        : base("unet", weights, options) => _c = config;

    /// <summary>Builds the graph; <paramref name="weights"/> null gives a shape-only graph.</summary>
    public static BuiltGraph Build(UNetConfig config, IWeightSource? weights, GraphBuildOptions? options = null)
    {
        config.Validate("UNet config");
        var b = new UNetGraph(config, weights, options ?? new GraphBuildOptions());
        return b.BuildGraph();
    }

    private BuiltGraph BuildGraph()
    {
        G.AddInput("sample", F, "batch", "channels", "height", "width");
        G.AddInput("timestep", F, "batch");
        G.AddInput("encoder_hidden_states", F, "batch", "sequence", _c.CrossAttentionDim);
        _context = "encoder_hidden_states";

        _temb = TimeEmbedding("sample", "timestep");
        var x = Conv("sample", "conv_in", _c.InChannels, _c.BlockOutChannels[0], 3);

        var skips = new Stack<(string Value, int Channels)>();
        skips.Push((x, _c.BlockOutChannels[0]));
        int channels = _c.BlockOutChannels[0];
        int n = _c.BlockOutChannels.Length;
        for (int i = 0; i < n; i++)
        {
            using var _ = Scope($"down_blocks.{i}");
            int outCh = _c.BlockOutChannels[i];
            for (int j = 0; j < _c.LayersPerBlock; j++)
            {
                x = Resnet(x, $"resnets.{j}", j == 0 ? channels : outCh, outCh);
                if (_c.DownHasAttention(i)) x = Transformer(x, $"attentions.{j}", outCh, _c.AttentionHeads[i]);
                skips.Push((x, outCh));
            }
            channels = outCh;
            if (i < n - 1)
            {
                x = Conv(x, "downsamplers.0.conv", outCh, outCh, 3, stride: 2, padding: _c.DownsamplePadding);
                skips.Push((x, outCh));
            }
        }

        using (Scope("mid_block"))
        {
            int c = _c.BlockOutChannels[^1];
            x = Resnet(x, "resnets.0", c, c);
            x = Transformer(x, "attentions.0", c, _c.AttentionHeads[^1]);
            x = Resnet(x, "resnets.1", c, c);
        }

        var reversed = _c.BlockOutChannels.Reverse().ToArray();
        var reversedHeads = _c.AttentionHeads.Reverse().ToArray();
        for (int i = 0; i < n; i++)
        {
            using var _ = Scope($"up_blocks.{i}");
            int prevOut = channels;
            int outCh = reversed[i];
            int inCh = reversed[Math.Min(i + 1, n - 1)];
            for (int j = 0; j <= _c.LayersPerBlock; j++)
            {
                var (skip, skipCh) = skips.Pop();
                int resIn = j == 0 ? prevOut : outCh;
                x = G.Op("Concat", [x, skip], new OnnxAttribute("axis", 1L));
                x = Resnet(x, $"resnets.{j}", resIn + skipCh, outCh);
                if (_c.UpHasAttention(i)) x = Transformer(x, $"attentions.{j}", outCh, reversedHeads[i]);
            }
            channels = outCh;
            if (i < n - 1) x = Upsample(x, "upsamplers.0", outCh, skips.Peek().Value);
        }

        x = GroupNorm(x, "conv_norm_out", channels, _c.NormGroups, _c.NormEps);
        x = SiLU(x, "conv_act");
        x = Conv(x, "conv_out", channels, _c.OutChannels, 3);
        G.AddOutput("out_sample", x, F, "batch", _c.OutChannels, "height", "width");
        return Finish("UNet");
    }

    /// <summary>
    /// Sinusoidal timestep embedding (diffusers <c>Timesteps</c>) and the two-layer MLP
    /// (<c>TimestepEmbedding</c>): Expand → Unsqueeze → Mul(freq) → Sin, Cos → Concat → halves
    /// swapped when flip_sin_to_cos → Gemm → SiLU → Gemm.
    /// </summary>
    private string TimeEmbedding(string sample, string timestep)
    {
        int dim = _c.BlockOutChannels[0];
        int half = dim / 2;
        var t = G.Op("Expand", timestep, ShapeOf(sample, 0, 1));
        string emb;
        using (Scope("time_proj"))
        {
            // exp(-ln(10000)·i / (half − shift)) in float32, as torch computes it.
            var freq = new float[half];
            float logPeriod = -(float)Math.Log(10000.0);
            for (int i = 0; i < half; i++) freq[i] = MathF.Exp(logPeriod * i / (half - _c.FreqShift));
            var tcol = G.Op("Unsqueeze", t, Ints(1));
            var tf = G.Op("Cast", [tcol], new OnnxAttribute("to", (long)DType.F32.ToOnnx()));
            var args = G.Op("Mul", tf, G.Constant(Tensor.FromArray(freq, 1, half)));
            emb = G.Op("Concat", [G.Op("Sin", args), G.Op("Cos", args)], new OnnxAttribute("axis", -1L));
            if (_c.FlipSinToCos)
            {
                var cos = G.Op("Slice", emb, Ints(half), Ints(dim), Ints(-1));
                var sin = G.Op("Slice", emb, Ints(0), Ints(half), Ints(-1));
                emb = G.Op("Concat", [cos, sin], new OnnxAttribute("axis", -1L));
            }
            if (F != DType.F32) emb = G.Op("Cast", [emb], new OnnxAttribute("to", (long)F.ToOnnx()));
        }
        using (Scope("time_embedding"))
        {
            var h = Gemm(emb, "linear_1", dim, _c.TimeEmbedDim);
            h = SiLU(h, "act");
            return Gemm(h, "linear_2", _c.TimeEmbedDim, _c.TimeEmbedDim);
        }
    }

    /// <summary>diffusers <c>ResnetBlock2D</c> with a time embedding (scale-shift "default", output scale 1).</summary>
    private string Resnet(string x, string module, int inCh, int outCh)
    {
        using var _ = Scope(module);
        var h = GroupNorm(x, "norm1", inCh, _c.NormGroups, _c.NormEps);
        h = SiLU(h);
        h = Conv(h, "conv1", inCh, outCh, 3);
        // SiLU(temb) is the same for every resnet: computed once, as the torch export does after CSE.
        _tembActivated ??= SiLU(_temb);
        var t = Gemm(_tembActivated, "time_emb_proj", _c.TimeEmbedDim, outCh);
        h = G.Op("Add", h, G.Op("Unsqueeze", t, Ints(2, 3)));
        h = GroupNorm(h, "norm2", outCh, _c.NormGroups, _c.NormEps);
        h = SiLU(h);
        h = Conv(h, "conv2", outCh, outCh, 3);
        var shortcut = inCh != outCh ? Conv(x, "conv_shortcut", inCh, outCh, 1) : x;
        return G.Op("Add", shortcut, h);
    }

    /// <summary>
    /// diffusers <c>Transformer2DModel</c> with one <c>BasicTransformerBlock</c>: GroupNorm(eps 1e-6) →
    /// proj_in (1×1 conv, or linear when use_linear_projection) → self-attention, cross-attention,
    /// GEGLU feed-forward, each pre-LayerNorm with a residual → proj_out → + input.
    /// </summary>
    private string Transformer(string x, string module, int channels, int heads)
    {
        using var _ = Scope(module);
        var h = GroupNorm(x, "norm", channels, _c.NormGroups, 1e-6f);
        if (!_c.UseLinearProjection) h = Conv(h, "proj_in", channels, channels, 1);
        h = G.Op("Transpose", [h], new OnnxAttribute("perm", new long[] { 0, 2, 3, 1 }));
        h = G.Op("Reshape", h, Ints(0, -1, channels));
        if (_c.UseLinearProjection) h = Linear(h, "proj_in", channels, channels);

        using (Scope("transformer_blocks.0"))
        {
            var n1 = LayerNorm(h, "norm1", channels, 1e-5f);
            h = G.Op("Add", Attention(n1, n1, "attn1", channels, channels, heads, qkvBias: false, upcastSoftmax: false), h);
            var n2 = LayerNorm(h, "norm2", channels, 1e-5f);
            h = G.Op("Add", Attention(n2, _context, "attn2", channels, _c.CrossAttentionDim, heads, qkvBias: false, upcastSoftmax: false), h);
            var n3 = LayerNorm(h, "norm3", channels, 1e-5f);
            h = G.Op("Add", FeedForward(n3, channels), h);
        }

        if (_c.UseLinearProjection) h = Linear(h, "proj_out", channels, channels);
        // [B, HW, C] → [B, C, HW] → [B, C, H, W] (the residual input's shape).
        h = G.Op("Transpose", [h], new OnnxAttribute("perm", new long[] { 0, 2, 1 }));
        h = G.Op("Reshape", h, G.Op("Shape", x));
        if (!_c.UseLinearProjection) h = Conv(h, "proj_out", channels, channels, 1);
        return G.Op("Add", h, x);
    }

    /// <summary>GEGLU feed-forward: proj → (h, g) halves → h·gelu(g) → net.2.</summary>
    private string FeedForward(string x, int dim)
    {
        using var _ = Scope("ff");
        int inner = dim * 4;
        string gated;
        using (Scope("net.0"))
        {
            var p = Linear(x, "proj", dim, inner * 2);
            var h = G.Op("Slice", p, Ints(0), Ints(inner), Ints(-1));
            var g = G.Op("Slice", p, Ints(inner), Ints(2L * inner), Ints(-1));
            gated = G.Op("Mul", h, Gelu(g));
        }
        return Linear(gated, "net.2", inner, dim);
    }

    /// <summary>Nearest-neighbour upsampling to the skip connection's height and width, then Conv 3×3.</summary>
    private string Upsample(string x, string module, int channels, string sizeLike)
    {
        using var _ = Scope(module);
        var sizes = G.Op("Concat", [ShapeOf(x, 0, 2), ShapeOf(sizeLike, 2, 4)], new OnnxAttribute("axis", 0L));
        var up = G.Op("Resize", [x, "", "", sizes],
            new OnnxAttribute("coordinate_transformation_mode", "asymmetric"), new OnnxAttribute("cubic_coeff_a", -0.75f),
            new OnnxAttribute("mode", "nearest"), new OnnxAttribute("nearest_mode", "floor"));
        return Conv(up, "conv", channels, channels, 3);
    }
}
