using CudaDream.Engine.Backends.Cpu.Kernels;
using CudaDream.Engine.Ops;
using Xunit;
using Xunit.Abstractions;
using static CudaDream.Engine.Tests.Cpu.KernelTestSupport;

namespace CudaDream.Engine.Tests.Cpu;

/// <summary>
/// Ground truth for the kernels: modules of the sd-tiny UNet, text encoder and VAE recomputed from the
/// fixture's weights and recorded inputs, compared with the activations PyTorch/diffusers recorded
/// (refs/*_acts.safetensors). Tolerance: DESIGN.md's fp32 bound, max|a−b| ≤ 1e-4·max|ref|.
/// Every test runs once with the reference kernels and once with the fast ones.
/// </summary>
public class SdTinyAnchorTests(ITestOutputHelper output)
{
    private const double Tol = 1e-4;
    private static readonly Lazy<Dictionary<string, float[]>> UnetActs = new(() => SdTinyWeights.Read("unet_acts.safetensors"));
    private static readonly Lazy<Dictionary<string, float[]>> UnetInputs = new(() => SdTinyWeights.Read("unet.safetensors"));
    private static readonly Lazy<Dictionary<string, float[]>> TextActs = new(() => SdTinyWeights.Read("text_encoder_acts.safetensors"));
    private static readonly Lazy<Dictionary<string, float[]>> VaeDecoderActs = new(() => SdTinyWeights.Read("vae_decoder_acts.safetensors"));

    private void Check(float[] expected, float[] actual, string what)
    {
        double maxRef = expected.Max(Math.Abs);
        double maxDiff = expected.Zip(actual, (e, a) => Math.Abs((double)e - a)).Max();
        output.WriteLine($"{what}: max|a−b|/max|ref| = {maxDiff / maxRef:E2}");
        AssertClose(expected, actual, Tol, what);
    }

    [Fact]
    public void Time_proj_is_the_sinusoidal_embedding_of_the_timesteps()
    {
        var t = UnetInputs.Value["timestep"]; // [10, 999]
        var emb = new float[2 * 32];
        TimestepEmbeddingReference.ForwardSd15<float>(2, 32, t, emb);
        Check(UnetActs.Value["act.time_proj"], emb, "time_proj");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Time_embedding_is_linear_silu_linear(bool fast)
    {
        var m = new SdTinyModules(fast);
        var h = m.Linear("unet:time_embedding.linear_1", UnetActs.Value["act.time_proj"], 2);
        var y = m.Linear("unet:time_embedding.linear_2", m.Silu(h), 2);
        Check(UnetActs.Value["act.time_embedding"], y, $"time_embedding (fast={fast})");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Conv_in_and_the_first_resnet(bool fast)
    {
        var m = new SdTinyModules(fast);
        var x = m.Conv("unet:conv_in", UnetInputs.Value["sample"], 2, 16, 16);
        Check(UnetActs.Value["act.conv_in"], x, $"conv_in (fast={fast})");

        // ResnetBlock2D: conv2(silu(norm2(conv1(silu(norm1(x))) + time_emb_proj(silu(temb))))) + x
        const string R = "unet:down_blocks.0.resnets.0";
        x = UnetActs.Value["act.conv_in"];
        var h = m.Conv(R + ".conv1", m.GroupNorm(R + ".norm1", x, 2, 32, 8, 1e-5f, silu: true), 2, 16, 16);
        var temb = m.Linear(R + ".time_emb_proj", m.Silu(UnetActs.Value["act.time_embedding"]), 2);
        for (int b = 0; b < 2; b++)
            for (int c = 0; c < 32; c++)
                for (int i = 0; i < 256; i++) h[(b * 32 + c) * 256 + i] += temb[b * 32 + c];
        h = m.Conv(R + ".conv2", m.GroupNorm(R + ".norm2", h, 2, 32, 8, 1e-5f, silu: true), 2, 16, 16);
        Check(UnetActs.Value["act.down_blocks.0.resnets.0"], SdTinyModules.Add(x, h), $"down_blocks.0.resnets.0 (fast={fast})");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Conv_norm_out_and_conv_out(bool fast)
    {
        var m = new SdTinyModules(fast);
        var x = UnetActs.Value["act.up_blocks.2"];
        Check(UnetActs.Value["act.conv_norm_out"], m.GroupNorm("unet:conv_norm_out", x, 2, 32, 8, 1e-5f, silu: false), $"conv_norm_out (fast={fast})");
        // conv_out(conv_act(conv_norm_out(x))) with GroupNorm and SiLU fused
        var y = m.Conv("unet:conv_out", m.GroupNorm("unet:conv_norm_out", x, 2, 32, 8, 1e-5f, silu: true), 2, 16, 16);
        Check(UnetActs.Value["act.conv_out"], y, $"conv_out (fast={fast})");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Transformer_block_of_the_first_down_block(bool fast)
    {
        var m = new SdTinyModules(fast);
        var acts = UnetActs.Value;
        const string T = "unet:down_blocks.0.attentions.0";
        const string B = T + ".transformer_blocks.0";
        const int N = 2, C = 32, S = 256, Heads = 8;

        // Transformer2DModel: proj_in(norm(x)), GroupNorm eps 1e-6
        var residual = acts["act.down_blocks.0.resnets.0"];
        var projIn = m.Conv(T + ".proj_in", m.GroupNorm(T + ".norm", residual, N, C, 8, 1e-6f, silu: false), N, 16, 16);
        Check(acts["act.down_blocks.0.attentions.0.proj_in"], projIn, $"proj_in (fast={fast})");

        var hidden = SdTinyModules.ChannelsLast(acts["act.down_blocks.0.attentions.0.proj_in"], N, C, S);
        var norm1 = m.LayerNorm(B + ".norm1", hidden, C);
        Check(acts["act.down_blocks.0.attentions.0.transformer_blocks.0.norm1"], norm1, $"norm1 (fast={fast})");

        var attn1 = m.DiffusersAttention(B + ".attn1", acts["act.down_blocks.0.attentions.0.transformer_blocks.0.norm1"], N, S, Heads);
        Check(acts["act.down_blocks.0.attentions.0.transformer_blocks.0.attn1"], attn1, $"attn1 (fast={fast})");

        hidden = SdTinyModules.Add(acts["act.down_blocks.0.attentions.0.transformer_blocks.0.attn1"], hidden);
        var context = UnetInputs.Value["encoder_hidden_states"]; // [2, 77, 32]
        var attn2 = m.DiffusersAttention(B + ".attn2", m.LayerNorm(B + ".norm2", hidden, C), N, S, Heads, context, 77);
        Check(acts["act.down_blocks.0.attentions.0.transformer_blocks.0.attn2"], attn2, $"attn2 (fast={fast})");

        hidden = SdTinyModules.Add(acts["act.down_blocks.0.attentions.0.transformer_blocks.0.attn2"], hidden);
        var ff = m.Linear(B + ".ff.net.2", m.Geglu(m.Linear(B + ".ff.net.0.proj", m.LayerNorm(B + ".norm3", hidden, C), N * S), N * S), N * S);
        Check(acts["act.down_blocks.0.attentions.0.transformer_blocks.0.ff"], ff, $"ff (GEGLU) (fast={fast})");
        hidden = SdTinyModules.Add(acts["act.down_blocks.0.attentions.0.transformer_blocks.0.ff"], hidden);
        Check(acts["act.down_blocks.0.attentions.0.transformer_blocks.0"], hidden, $"transformer_blocks.0 (fast={fast})");

        var output2d = m.Conv(T + ".proj_out", SdTinyModules.ChannelsFirst(acts["act.down_blocks.0.attentions.0.transformer_blocks.0"], N, C, S), N, 16, 16);
        Check(acts["act.down_blocks.0.attentions.0"], SdTinyModules.Add(output2d, residual), $"attentions.0 (fast={fast})");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Clip_encoder_layer_with_causal_attention_and_quick_gelu(bool fast)
    {
        var m = new SdTinyModules(fast);
        var acts = TextActs.Value;
        const string L = "text_encoder:text_model.encoder.layers.0";
        const int N = 2, T = 77, C = 32, Heads = 4;
        var x = acts["act.text_model.embeddings"];
        var h = m.LayerNorm(L + ".layer_norm1", x, C);
        var q = m.Linear(L + ".self_attn.q_proj", h, N * T);
        var k = m.Linear(L + ".self_attn.k_proj", h, N * T);
        var v = m.Linear(L + ".self_attn.v_proj", h, N * T);
        var attn = m.Linear(L + ".self_attn.out_proj", m.Attention(q, k, v, N, T, T, Heads, causal: true), N * T);
        x = SdTinyModules.Add(x, attn);
        var mlp = m.Linear(L + ".mlp.fc2", m.QuickGelu(m.Linear(L + ".mlp.fc1", m.LayerNorm(L + ".layer_norm2", x, C), N * T)), N * T);
        Check(acts["act.text_model.encoder.layers.0"], SdTinyModules.Add(x, mlp), $"text encoder layer 0 (fast={fast})");
        var final = m.LayerNorm("text_encoder:text_model.final_layer_norm", acts["act.text_model.encoder.layers.2"], C);
        Check(acts["act.text_model.final_layer_norm"], final, $"final_layer_norm (fast={fast})");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Vae_decoder_mid_block_with_single_head_attention(bool fast)
    {
        var m = new SdTinyModules(fast);
        const int C = 32, H = 16, W = 16, S = H * W;
        float[] Resnet(string r, float[] input)
        {
            var hh = m.Conv(r + ".conv1", m.GroupNorm(r + ".norm1", input, 1, C, 8, 1e-6f, silu: true), 1, H, W);
            hh = m.Conv(r + ".conv2", m.GroupNorm(r + ".norm2", hh, 1, C, 8, 1e-6f, silu: true), 1, H, W);
            return SdTinyModules.Add(input, hh);
        }
        const string Mid = "vae:decoder.mid_block";
        var x = Resnet(Mid + ".resnets.0", VaeDecoderActs.Value["act.decoder.conv_in"]);
        // Attention (1 head of 32, residual): group_norm → tokens → q/k/v (with bias) → to_out.0 → + x
        var tokens = SdTinyModules.ChannelsLast(m.GroupNorm(Mid + ".attentions.0.group_norm", x, 1, C, 8, 1e-6f, silu: false), 1, C, S);
        var attn = m.DiffusersAttention(Mid + ".attentions.0", tokens, 1, S, 1, qkvBias: true);
        x = SdTinyModules.Add(SdTinyModules.ChannelsFirst(attn, 1, C, S), x);
        x = Resnet(Mid + ".resnets.1", x);
        Check(VaeDecoderActs.Value["act.decoder.mid_block"], x, $"VAE decoder mid_block (fast={fast})");
    }

    [Fact]
    public void Mse_loss_reproduces_the_torch_training_loss()
    {
        var r = SdTinyWeights.Read("unet_lora_grad.safetensors");
        var pred = r["out_sample"];
        var target = r["target"];
        var perSample = new float[2];
        float loss = LossReference.WeightedMse<float>(2, pred.Length / 2, pred, target, ReadOnlySpan<float>.Empty, perSample);
        output.WriteLine($"loss {loss:R}, torch {r["loss"][0]:R}");
        Assert.True(Math.Abs(loss - r["loss"][0]) <= 1e-6 * r["loss"][0]);
        Assert.Equal(loss, (perSample[0] + perSample[1]) / 2, 6);
        double exact = LossReference.WeightedMse<double>(2, pred.Length / 2, pred.Select(v => (double)v).ToArray(), target.Select(v => (double)v).ToArray(), ReadOnlySpan<double>.Empty);
        Assert.True(Math.Abs(exact - r["loss"][0]) <= 1e-6 * exact);
    }
}
