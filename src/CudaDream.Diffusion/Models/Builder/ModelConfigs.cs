using System.Text.Json;
using System.Text.Json.Nodes;
using CudaDream.Engine;

namespace CudaDream.Diffusion.Models.Builder;

/// <summary>
/// diffusers <c>UNet2DConditionModel</c> configuration, limited to what the SD 1.x family uses.
/// Read from a diffusers <c>unet/config.json</c>; anything outside the family (class embeddings,
/// SDXL additions, …) is refused by name rather than ignored.
/// </summary>
public sealed record UNetConfig
{
    public int InChannels { get; init; } = 4;
    public int OutChannels { get; init; } = 4;
    public int SampleSize { get; init; } = 64;
    public int[] BlockOutChannels { get; init; } = [320, 640, 1280, 1280];
    public string[] DownBlockTypes { get; init; } = ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"];
    public string[] UpBlockTypes { get; init; } = ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"];
    public int LayersPerBlock { get; init; } = 2;
    /// <summary>Heads per block (diffusers' legacy <c>attention_head_dim</c> means the head count).</summary>
    public int[] AttentionHeads { get; init; } = [8, 8, 8, 8];
    public int CrossAttentionDim { get; init; } = 768;
    public int NormGroups { get; init; } = 32;
    public float NormEps { get; init; } = 1e-5f;
    public bool UseLinearProjection { get; init; }
    public bool FlipSinToCos { get; init; } = true;
    public int FreqShift { get; init; }
    public int DownsamplePadding { get; init; } = 1;

    public int TimeEmbedDim => BlockOutChannels[0] * 4;
    public bool DownHasAttention(int i) => DownBlockTypes[i] == "CrossAttnDownBlock2D";
    public bool UpHasAttention(int i) => UpBlockTypes[i] == "CrossAttnUpBlock2D";

    public static UNetConfig Sd15 { get; } = new();

    public static UNetConfig FromJson(string json, string source)
    {
        var o = ConfigJson.Parse(json, source);
        var c = new UNetConfig
        {
            InChannels = o.Int("in_channels", 4),
            OutChannels = o.Int("out_channels", 4),
            SampleSize = o.Int("sample_size", 64),
            BlockOutChannels = o.Ints("block_out_channels", [320, 640, 1280, 1280]),
            DownBlockTypes = o.Strings("down_block_types", Sd15.DownBlockTypes),
            UpBlockTypes = o.Strings("up_block_types", Sd15.UpBlockTypes),
            LayersPerBlock = o.Int("layers_per_block", 2),
            CrossAttentionDim = o.Int("cross_attention_dim", 768),
            NormGroups = o.Int("norm_num_groups", 32),
            NormEps = o.Float("norm_eps", 1e-5f),
            UseLinearProjection = o.Bool("use_linear_projection", false),
            FlipSinToCos = o.Bool("flip_sin_to_cos", true),
            FreqShift = o.Int("freq_shift", 0),
            DownsamplePadding = o.Int("downsample_padding", 1),
        };
        int n = c.BlockOutChannels.Length;
        // num_attention_heads wins; otherwise attention_head_dim carries the head count (diffusers' legacy naming).
        var heads = o.Has("num_attention_heads") ? o.IntOrInts("num_attention_heads", n) : o.IntOrInts("attention_head_dim", n);
        c = c with { AttentionHeads = heads ?? Enumerable.Repeat(8, n).ToArray() };

        o.Require("act_fn", "silu");
        o.Require("mid_block_type", "UNetMidBlock2DCrossAttn");
        o.Require("time_embedding_type", "positional");
        o.Require("resnet_time_scale_shift", "default");
        foreach (var k in new[] { "class_embed_type", "addition_embed_type", "time_cond_proj_dim", "encoder_hid_dim", "num_class_embeds", "time_embedding_act_fn", "timestep_post_act", "time_embedding_dim", "projection_class_embeddings_input_dim" })
            o.RequireNull(k);
        o.RequireFalse("center_input_sample");
        o.RequireFalse("dual_cross_attention");
        o.RequireFalse("only_cross_attention");
        o.RequireNumber("mid_block_scale_factor", 1);
        o.RequireNumber("transformer_layers_per_block", 1);
        o.RequireNumber("conv_in_kernel", 3);
        o.RequireNumber("conv_out_kernel", 3);
        c.Validate(source);
        return c;
    }

    public void Validate(string source)
    {
        int n = BlockOutChannels.Length;
        if (n < 1 || DownBlockTypes.Length != n || UpBlockTypes.Length != n || AttentionHeads.Length != n)
            throw new CudaDreamException($"{source}: block_out_channels, down_block_types, up_block_types and the head counts must have the same length");
        foreach (var t in DownBlockTypes)
            if (t is not ("CrossAttnDownBlock2D" or "DownBlock2D")) throw new CudaDreamException($"{source}: down block type '{t}' is not part of the SD 1.x family");
        foreach (var t in UpBlockTypes)
            if (t is not ("CrossAttnUpBlock2D" or "UpBlock2D")) throw new CudaDreamException($"{source}: up block type '{t}' is not part of the SD 1.x family");
        for (int i = 0; i < n; i++)
        {
            if (BlockOutChannels[i] % NormGroups != 0) throw new CudaDreamException($"{source}: {BlockOutChannels[i]} channels are not divisible into {NormGroups} norm groups");
            if (BlockOutChannels[i] % AttentionHeads[i] != 0) throw new CudaDreamException($"{source}: {BlockOutChannels[i]} channels are not divisible into {AttentionHeads[i]} heads");
        }
    }

    /// <summary>The diffusers config.json for this UNet (the keys diffusers needs to rebuild it).</summary>
    public string ToJson() => ConfigJson.Write(new JsonObject
    {
        ["_class_name"] = "UNet2DConditionModel",
        ["_diffusers_version"] = "0.21.4",
        ["act_fn"] = "silu",
        ["attention_head_dim"] = ConfigJson.Array(AttentionHeads),
        ["block_out_channels"] = ConfigJson.Array(BlockOutChannels),
        ["center_input_sample"] = false,
        ["cross_attention_dim"] = CrossAttentionDim,
        ["down_block_types"] = ConfigJson.Array(DownBlockTypes),
        ["downsample_padding"] = DownsamplePadding,
        ["flip_sin_to_cos"] = FlipSinToCos,
        ["freq_shift"] = FreqShift,
        ["in_channels"] = InChannels,
        ["layers_per_block"] = LayersPerBlock,
        ["mid_block_scale_factor"] = 1,
        ["norm_eps"] = NormEps,
        ["norm_num_groups"] = NormGroups,
        ["out_channels"] = OutChannels,
        ["sample_size"] = SampleSize,
        ["up_block_types"] = ConfigJson.Array(UpBlockTypes),
        ["use_linear_projection"] = UseLinearProjection,
    });
}

/// <summary>diffusers <c>AutoencoderKL</c> configuration (DownEncoderBlock2D / UpDecoderBlock2D stacks).</summary>
public sealed record VaeConfig
{
    public int InChannels { get; init; } = 3;
    public int OutChannels { get; init; } = 3;
    public int[] BlockOutChannels { get; init; } = [128, 256, 512, 512];
    public int LayersPerBlock { get; init; } = 2;
    public int LatentChannels { get; init; } = 4;
    public int NormGroups { get; init; } = 32;
    public int SampleSize { get; init; } = 512;
    public float ScalingFactor { get; init; } = 0.18215f;

    /// <summary>diffusers hard-codes the VAE's norm epsilon.</summary>
    public const float NormEps = 1e-6f;

    public static VaeConfig Sd15 { get; } = new();

    public static VaeConfig FromJson(string json, string source)
    {
        var o = ConfigJson.Parse(json, source);
        var c = new VaeConfig
        {
            InChannels = o.Int("in_channels", 3),
            OutChannels = o.Int("out_channels", 3),
            BlockOutChannels = o.Ints("block_out_channels", [64]),
            LayersPerBlock = o.Int("layers_per_block", 1),
            LatentChannels = o.Int("latent_channels", 4),
            NormGroups = o.Int("norm_num_groups", 32),
            SampleSize = o.Int("sample_size", 32),
            ScalingFactor = o.Float("scaling_factor", 0.18215f),
        };
        o.Require("act_fn", "silu");
        foreach (var t in o.Strings("down_block_types", []))
            if (t != "DownEncoderBlock2D") throw new CudaDreamException($"{source}: VAE down block type '{t}' is not supported");
        foreach (var t in o.Strings("up_block_types", []))
            if (t != "UpDecoderBlock2D") throw new CudaDreamException($"{source}: VAE up block type '{t}' is not supported");
        foreach (var ch in c.BlockOutChannels)
            if (ch % c.NormGroups != 0) throw new CudaDreamException($"{source}: {ch} channels are not divisible into {c.NormGroups} norm groups");
        return c;
    }

    public string ToJson() => ConfigJson.Write(new JsonObject
    {
        ["_class_name"] = "AutoencoderKL",
        ["_diffusers_version"] = "0.21.4",
        ["act_fn"] = "silu",
        ["block_out_channels"] = ConfigJson.Array(BlockOutChannels),
        ["down_block_types"] = ConfigJson.Array(Enumerable.Repeat("DownEncoderBlock2D", BlockOutChannels.Length)),
        ["in_channels"] = InChannels,
        ["latent_channels"] = LatentChannels,
        ["layers_per_block"] = LayersPerBlock,
        ["norm_num_groups"] = NormGroups,
        ["out_channels"] = OutChannels,
        ["sample_size"] = SampleSize,
        ["scaling_factor"] = ScalingFactor,
        ["up_block_types"] = ConfigJson.Array(Enumerable.Repeat("UpDecoderBlock2D", BlockOutChannels.Length)),
    });
}

/// <summary>transformers <c>CLIPTextModel</c> configuration.</summary>
public sealed record ClipTextConfig
{
    public int VocabSize { get; init; } = 49408;
    public int HiddenSize { get; init; } = 768;
    public int IntermediateSize { get; init; } = 3072;
    public int NumLayers { get; init; } = 12;
    public int NumHeads { get; init; } = 12;
    public int MaxPositions { get; init; } = 77;
    /// <summary>"quick_gelu" (SD 1.x) or "gelu".</summary>
    public string HiddenAct { get; init; } = "quick_gelu";
    public float LayerNormEps { get; init; } = 1e-5f;
    public int BosTokenId { get; init; }
    public int EosTokenId { get; init; } = 2;
    public int PadTokenId { get; init; } = 1;
    public int ProjectionDim { get; init; } = 768;

    public static ClipTextConfig Sd15 { get; } = new();

    public static ClipTextConfig FromJson(string json, string source)
    {
        var o = ConfigJson.Parse(json, source);
        var c = new ClipTextConfig
        {
            VocabSize = o.Int("vocab_size", 49408),
            HiddenSize = o.Int("hidden_size", 512),
            IntermediateSize = o.Int("intermediate_size", 2048),
            NumLayers = o.Int("num_hidden_layers", 12),
            NumHeads = o.Int("num_attention_heads", 8),
            MaxPositions = o.Int("max_position_embeddings", 77),
            HiddenAct = o.String("hidden_act", "quick_gelu"),
            LayerNormEps = o.Float("layer_norm_eps", 1e-5f),
            BosTokenId = o.Int("bos_token_id", 0),
            EosTokenId = o.Int("eos_token_id", 2),
            PadTokenId = o.Int("pad_token_id", 1),
            ProjectionDim = o.Int("projection_dim", 512),
        };
        if (c.HiddenAct is not ("quick_gelu" or "gelu")) throw new CudaDreamException($"{source}: hidden_act '{c.HiddenAct}' is not supported (quick_gelu or gelu)");
        if (c.HiddenSize % c.NumHeads != 0) throw new CudaDreamException($"{source}: hidden_size {c.HiddenSize} is not divisible into {c.NumHeads} heads");
        return c;
    }

    public string ToJson() => ConfigJson.Write(new JsonObject
    {
        ["architectures"] = ConfigJson.Array(new[] { "CLIPTextModel" }),
        ["attention_dropout"] = 0.0,
        ["bos_token_id"] = BosTokenId,
        ["dropout"] = 0.0,
        ["eos_token_id"] = EosTokenId,
        ["hidden_act"] = HiddenAct,
        ["hidden_size"] = HiddenSize,
        ["initializer_factor"] = 1.0,
        ["initializer_range"] = 0.02,
        ["intermediate_size"] = IntermediateSize,
        ["layer_norm_eps"] = LayerNormEps,
        ["max_position_embeddings"] = MaxPositions,
        ["model_type"] = "clip_text_model",
        ["num_attention_heads"] = NumHeads,
        ["num_hidden_layers"] = NumLayers,
        ["pad_token_id"] = PadTokenId,
        ["projection_dim"] = ProjectionDim,
        ["vocab_size"] = VocabSize,
    });
}

/// <summary>The three configs of an SD 1.x pipeline.</summary>
public sealed record SdModelConfig(UNetConfig UNet, VaeConfig Vae, ClipTextConfig TextEncoder)
{
    public static SdModelConfig Sd15 { get; } = new(UNetConfig.Sd15, VaeConfig.Sd15, ClipTextConfig.Sd15);

    /// <summary>
    /// Reads configs from a diffusers folder: <c>unet/config.json</c>, <c>vae/config.json</c> (or
    /// <c>vae_decoder/config.json</c>) and <c>text_encoder/config.json</c> (or <c>text_encoder_config.json</c>).
    /// </summary>
    public static SdModelConfig FromFolder(string dir)
    {
        string Find(params string[] candidates)
        {
            foreach (var c in candidates)
            {
                var p = Path.Combine(dir, c);
                if (File.Exists(p)) return p;
            }
            throw new CudaDreamException($"{dir}: no {candidates[0]} (looked for {string.Join(", ", candidates)})");
        }
        var unet = Find("unet/config.json");
        var vae = Find("vae/config.json", "vae_decoder/config.json", "vae_encoder/config.json");
        var te = Find("text_encoder/config.json", "text_encoder_config.json");
        return new SdModelConfig(
            UNetConfig.FromJson(File.ReadAllText(unet), unet),
            VaeConfig.FromJson(File.ReadAllText(vae), vae),
            ClipTextConfig.FromJson(File.ReadAllText(te), te));
    }
}

/// <summary>Small typed access to a config.json object with errors that name the file and key.</summary>
internal sealed class ConfigJson
{
    private readonly JsonObject _o;
    private readonly string _source;

    private ConfigJson(JsonObject o, string source) { _o = o; _source = source; }

    public static ConfigJson Parse(string json, string source)
    {
        try
        {
            if (JsonNode.Parse(json) is JsonObject o) return new ConfigJson(o, source);
        }
        catch (JsonException e) { throw new InvalidFileException(source, $"not valid JSON ({e.Message})"); }
        throw new InvalidFileException(source, "not a JSON object");
    }

    public bool Has(string key) => _o.TryGetPropertyValue(key, out var v) && v != null;

    private T Get<T>(string key, T fallback, Func<JsonNode, T> read)
    {
        if (!_o.TryGetPropertyValue(key, out var v) || v == null) return fallback;
        try { return read(v); }
        catch (Exception e) when (e is InvalidOperationException or FormatException or JsonException)
        {
            throw new InvalidFileException(_source, $"'{key}' has an unexpected value {v.ToJsonString()}");
        }
    }

    public int Int(string key, int fallback) => Get(key, fallback, v => v.GetValue<int>());
    public float Float(string key, float fallback) => Get(key, fallback, v => (float)v.GetValue<double>());
    public bool Bool(string key, bool fallback) => Get(key, fallback, v => v.GetValue<bool>());
    public string String(string key, string fallback) => Get(key, fallback, v => v.GetValue<string>());
    public int[] Ints(string key, int[] fallback) => Get(key, fallback, v => v.AsArray().Select(x => x!.GetValue<int>()).ToArray());
    public string[] Strings(string key, string[] fallback) => Get(key, fallback, v => v.AsArray().Select(x => x!.GetValue<string>()).ToArray());

    /// <summary>An int repeated n times, or a list of n ints.</summary>
    public int[]? IntOrInts(string key, int n) => Get<int[]?>(key, null, v =>
        v is JsonArray a ? a.Select(x => x!.GetValue<int>()).ToArray() : Enumerable.Repeat(v.GetValue<int>(), n).ToArray());

    public void Require(string key, string expected)
    {
        var actual = String(key, expected);
        if (actual != expected) throw new CudaDreamException($"{_source}: {key} = '{actual}' is not supported (only '{expected}', the SD 1.x value)");
    }

    public void RequireNull(string key)
    {
        if (Has(key)) throw new CudaDreamException($"{_source}: {key} = {_o[key]!.ToJsonString()} is not supported (SD 1.x has none)");
    }

    public void RequireFalse(string key)
    {
        if (Bool(key, false)) throw new CudaDreamException($"{_source}: {key} = true is not supported");
    }

    public void RequireNumber(string key, double expected)
    {
        if (!Has(key)) return;
        double actual = Get(key, expected, v => v is JsonArray a ? a.Select(x => x!.GetValue<double>()).Distinct().Single() : v.GetValue<double>());
        if (actual != expected) throw new CudaDreamException($"{_source}: {key} = {actual} is not supported (only {expected})");
    }

    public static JsonArray Array<T>(IEnumerable<T> items) => new(items.Select(i => JsonValue.Create(i)).ToArray<JsonNode?>());

    public static string Write(JsonObject o) => o.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n";
}
