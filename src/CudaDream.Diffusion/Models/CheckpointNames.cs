using CudaDream.Diffusion.Models.Builder;
using CudaDream.Engine.Training.Lora;

namespace CudaDream.Diffusion.Models;

/// <summary>The three networks of an SD pipeline, as checkpoints and LoRA files name them.</summary>
public static class Components
{
    public const string UNet = "unet";
    public const string Vae = "vae";
    public const string TextEncoder = "text_encoder";
}

/// <summary>One weight in both layouts: the original-SD ("ldm") single-file key and the diffusers/transformers key.</summary>
public sealed record CheckpointKey(string Ldm, string Component, string Diffusers, int[] Shape)
{
    /// <summary>VAE mid-block attention projections: 1×1 conv [C,C,1,1] in ldm files, linear [C,C] in diffusers.</summary>
    public bool IsConvInLdm => Component == Components.Vae && Shape.Length == 2;

    public int[] LdmShape => IsConvInLdm ? [Shape[0], Shape[1], 1, 1] : Shape;
}

/// <summary>
/// ALL checkpoint name mapping lives here: original Stable Diffusion ("ldm", AUTOMATIC1111
/// single-file) ↔ diffusers/transformers state-dict keys ↔ kohya LoRA module names.
/// The ldm side follows diffusers' <c>scripts/convert_diffusers_to_original_stable_diffusion.py</c>
/// (current version: VAE mid attention as <c>q/k/v/proj_out</c> 1×1 convs), generalised from SD 1.5's
/// fixed 4 levels × 2 layers to any level count and layers per block; the legacy names older
/// converters wrote (<c>mid.attn_1.to_q</c> …, and pre-0.14 diffusers <c>query/key/value/proj_attn</c>)
/// are accepted on import.
/// </summary>
public static class CheckpointNames
{
    public const string LdmUNetPrefix = "model.diffusion_model.";
    public const string LdmVaePrefix = "first_stage_model.";
    public const string LdmTextPrefix = "cond_stage_model.transformer.";
    public const string LdmEmaPrefix = "model_ema.";

    public const string KohyaUNetPrefix = LoraFile.KohyaUNetPrefix;
    public const string KohyaTextPrefix = LoraFile.KohyaTextPrefix;

    /// <summary>
    /// The full table for a model: every diffusers/transformers weight of the three networks (read from
    /// shape-only builds of the graphs, so the table and the builder can never disagree) with its ldm key.
    /// </summary>
    public static IReadOnlyList<CheckpointKey> Table(SdModelConfig config)
    {
        var rows = new List<CheckpointKey>();
        foreach (var i in UNetGraph.Build(config.UNet, null).Initializers)
            rows.Add(new CheckpointKey(LdmUNetPrefix + UNetToLdm(i.Name, config.UNet), Components.UNet, i.Name, i.Shape));
        var vae = VaeGraphs.BuildEncoder(config.Vae, null).Initializers.Concat(VaeGraphs.BuildDecoder(config.Vae, null).Initializers);
        foreach (var i in vae)
            rows.Add(new CheckpointKey(LdmVaePrefix + VaeToLdm(i.Name, config.Vae), Components.Vae, i.Name, i.Shape));
        foreach (var i in ClipTextGraph.Build(config.TextEncoder, null).Initializers)
            rows.Add(new CheckpointKey(LdmTextPrefix + i.Name, Components.TextEncoder, i.Name, i.Shape));
        return rows;
    }

    // ---- UNet -----------------------------------------------------------------------------

    private static readonly (string Diffusers, string Ldm)[] UNetResnetParts =
    [
        ("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"), ("conv2", "out_layers.3"),
        ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection"),
    ];

    private static readonly (string Diffusers, string Ldm)[] UNetFixed =
    [
        ("time_embedding.linear_1.", "time_embed.0."), ("time_embedding.linear_2.", "time_embed.2."),
        ("conv_in.", "input_blocks.0.0."), ("conv_norm_out.", "out.0."), ("conv_out.", "out.2."),
    ];

    /// <summary>A UNet diffusers key (relative to the UNet) → ldm key (relative to model.diffusion_model).</summary>
    public static string UNetToLdm(string key, UNetConfig c)
    {
        foreach (var (d, l) in UNetFixed)
            if (key.StartsWith(d, StringComparison.Ordinal)) return l + key[d.Length..];
        int per = c.LayersPerBlock + 1;
        var p = key.Split('.');
        // p: down_blocks, i, kind, j, rest...
        if (p[0] == "down_blocks")
        {
            int i = int.Parse(p[1]);
            if (p[2] == "downsamplers") return $"input_blocks.{per * (i + 1)}.0.op.{string.Join('.', p[5..])}"; // downsamplers.0.conv.X
            int j = int.Parse(p[3]);
            int block = per * i + j + 1;
            return p[2] == "resnets" ? $"input_blocks.{block}.0.{ResnetPart(p[4..])}" : $"input_blocks.{block}.1.{string.Join('.', p[4..])}";
        }
        if (p[0] == "up_blocks")
        {
            int i = int.Parse(p[1]);
            if (p[2] == "upsamplers")
                return $"output_blocks.{per * i + c.LayersPerBlock}.{(c.UpHasAttention(i) ? 2 : 1)}.{string.Join('.', p[4..])}";
            int j = int.Parse(p[3]);
            int block = per * i + j;
            return p[2] == "resnets" ? $"output_blocks.{block}.0.{ResnetPart(p[4..])}" : $"output_blocks.{block}.1.{string.Join('.', p[4..])}";
        }
        if (p[0] == "mid_block")
        {
            int j = int.Parse(p[2]);
            return p[1] == "resnets" ? $"middle_block.{2 * j}.{ResnetPart(p[3..])}" : $"middle_block.1.{string.Join('.', p[3..])}";
        }
        throw new ArgumentException($"no ldm name for UNet key '{key}'");
    }

    private static string ResnetPart(string[] rest)
    {
        foreach (var (d, l) in UNetResnetParts)
            if (rest[0] == d) return l + "." + string.Join('.', rest[1..]);
        throw new ArgumentException($"unknown resnet parameter '{string.Join('.', rest)}'");
    }

    // ---- VAE ------------------------------------------------------------------------------

    private static readonly (string Diffusers, string Ldm)[] VaeAttentionParts =
    [
        ("group_norm.", "norm."), ("to_q.", "q."), ("to_k.", "k."), ("to_v.", "v."), ("to_out.0.", "proj_out."),
    ];

    /// <summary>A VAE diffusers key (relative to AutoencoderKL) → ldm key (relative to first_stage_model).</summary>
    public static string VaeToLdm(string key, VaeConfig c)
    {
        int n = c.BlockOutChannels.Length;
        var p = key.Split('.');
        if (p[0] is "quant_conv" or "post_quant_conv") return key;
        string side = p[0]; // encoder | decoder
        string rest = string.Join('.', p[1..]);
        if (p[1] == "conv_norm_out") return $"{side}.norm_out.{string.Join('.', p[2..])}";
        if (p[1] is "conv_in" or "conv_out") return key;
        if (p[1] == "mid_block")
        {
            if (p[2] == "resnets") return $"{side}.mid.block_{int.Parse(p[3]) + 1}.{VaeResnetPart(p[4..])}";
            string inner = string.Join('.', p[4..]);
            foreach (var (d, l) in VaeAttentionParts)
                if (inner.StartsWith(d, StringComparison.Ordinal)) return $"{side}.mid.attn_1.{l}{inner[d.Length..]}";
        }
        if (p[1] == "down_blocks")
        {
            int i = int.Parse(p[2]);
            if (p[3] == "downsamplers") return $"{side}.down.{i}.downsample.{string.Join('.', p[5..])}";
            return $"{side}.down.{i}.block.{p[4]}.{VaeResnetPart(p[5..])}";
        }
        if (p[1] == "up_blocks")
        {
            int i = n - 1 - int.Parse(p[2]);
            if (p[3] == "upsamplers") return $"{side}.up.{i}.upsample.{string.Join('.', p[5..])}";
            return $"{side}.up.{i}.block.{p[4]}.{VaeResnetPart(p[5..])}";
        }
        throw new ArgumentException($"no ldm name for VAE key '{key}' ({rest})");
    }

    private static string VaeResnetPart(string[] rest) =>
        (rest[0] == "conv_shortcut" ? "nin_shortcut" : rest[0]) + "." + string.Join('.', rest[1..]);

    /// <summary>
    /// Other spellings of a VAE mid-attention ldm key that files in the wild use: diffusers' pre-0.14
    /// names under the ldm prefix (<c>mid.attn_1.to_q.weight</c>, written by older converters).
    /// </summary>
    public static IEnumerable<string> LegacyLdmAliases(CheckpointKey key)
    {
        if (key.Component != Components.Vae || !key.Diffusers.Contains("mid_block.attentions.0.to_", StringComparison.Ordinal)) yield break;
        foreach (var (d, l) in VaeAttentionParts)
        {
            int at = key.Ldm.IndexOf(".mid.attn_1." + l, StringComparison.Ordinal);
            if (at >= 0 && d != "group_norm.") yield return key.Ldm[..(at + 12)] + d + key.Ldm[(at + 12 + l.Length)..];
        }
    }

    /// <summary>Old diffusers VAE attention names (before 0.14) → current ones, for diffusers-folder imports.</summary>
    public static string ModernizeDiffusersVaeKey(string key) => key
        .Replace(".attentions.0.query.", ".attentions.0.to_q.")
        .Replace(".attentions.0.key.", ".attentions.0.to_k.")
        .Replace(".attentions.0.value.", ".attentions.0.to_v.")
        .Replace(".attentions.0.proj_attn.", ".attentions.0.to_out.0.");

    /// <summary>Text-encoder keys of older transformers versions lack the <c>text_model.</c> level.</summary>
    public static string ModernizeTextKey(string key) =>
        key.StartsWith("text_model.", StringComparison.Ordinal) ? key : "text_model." + key;

    /// <summary>An EMA copy of a UNet weight in an ldm file: <c>model_ema.</c> + the key after "model." with dots removed.</summary>
    public static string LdmEmaKey(string ldmUNetKey) =>
        LdmEmaPrefix + ldmUNetKey["model.".Length..].Replace(".", "");

    // ---- kohya ----------------------------------------------------------------------------

    /// <summary>The kohya/A1111 LoRA module name of a diffusers module path ("lora_unet_down_blocks_0_…"); the LoRA reader resolves names with the same rule.</summary>
    public static string KohyaModuleName(string component, string modulePath) => LoraFile.KohyaName(component, modulePath);
}
