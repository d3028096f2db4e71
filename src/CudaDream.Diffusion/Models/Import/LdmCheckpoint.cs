using CudaDream.Diffusion.Models.Builder;
using CudaDream.Engine;
using CudaDream.Engine.Formats;
using CudaDream.Engine.Tensors;

namespace CudaDream.Diffusion.Models.Import;

/// <summary>The three networks' weights under diffusers/transformers keys.</summary>
public sealed record DiffusersWeights(
    IReadOnlyDictionary<string, Tensor> UNet,
    IReadOnlyDictionary<string, Tensor> Vae,
    IReadOnlyDictionary<string, Tensor> TextEncoder)
{
    public IReadOnlyDictionary<string, Tensor> Of(string component) => component switch
    {
        Components.UNet => UNet,
        Components.Vae => Vae,
        Components.TextEncoder => TextEncoder,
        _ => throw new ArgumentOutOfRangeException(nameof(component)),
    };
}

/// <summary>
/// Reads an original-SD ("ldm", AUTOMATIC1111) single-file checkpoint: detects the architecture from
/// the weights' shapes, refuses SD 2.x / SDXL / inpainting checkpoints by name, and maps every weight to
/// its diffusers key through <see cref="CheckpointNames"/>. Tensors stay views of the memory-mapped file.
/// </summary>
public static class LdmCheckpoint
{
    /// <summary>Training buffers of ldm checkpoints that carry no weights the pipeline needs.</summary>
    private static readonly string[] IgnoredKeys =
    [
        "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
        "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
        "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
        "logvar", "lvlb_weights", "model_ema.decay", "model_ema.num_updates",
    ];

    private const string PositionIdsKey = CheckpointNames.LdmTextPrefix + "text_model.embeddings.position_ids";

    /// <summary>
    /// What the shapes say about the model. Norm groups and head counts cannot be read from shapes;
    /// they take SD 1.x's values, and <see cref="IsPublishedSd1"/> tells whether the widths are SD 1.x's own
    /// (otherwise the caller needs a config).
    /// </summary>
    public sealed record Detected(SdModelConfig Config, bool IsPublishedSd1);

    public static Detected Detect(SafetensorsFile file)
    {
        string path = file.Path;
        var names = file.Names.ToHashSet(StringComparer.Ordinal);
        int[] Shape(string key) => file.Entry(key).Shape;
        bool Has(string key) => names.Contains(key);

        if (names.Any(n => n.StartsWith("conditioner.embedders.", StringComparison.Ordinal) || n.StartsWith("model.diffusion_model.label_emb.", StringComparison.Ordinal)))
            throw new CudaDreamException($"{path}: this is an SDXL checkpoint; CudaDream imports SD 1.x checkpoints only");
        if (names.Any(n => n.StartsWith("cond_stage_model.model.", StringComparison.Ordinal)))
            throw new CudaDreamException($"{path}: this is a Stable Diffusion 2.x checkpoint (OpenCLIP text encoder); CudaDream imports SD 1.x checkpoints only");
        if (!Has("model.diffusion_model.input_blocks.0.0.weight"))
        {
            if (names.Any(n => n.StartsWith("lora_unet_", StringComparison.Ordinal) || n.StartsWith("lora_te_", StringComparison.Ordinal)))
                throw new CudaDreamException($"{path}: this is a LoRA file, not a checkpoint; pass it to `export`/`sample` with --lora");
            throw new CudaDreamException($"{path}: not a Stable Diffusion checkpoint (no model.diffusion_model.input_blocks.0.0.weight)");
        }

        const string U = CheckpointNames.LdmUNetPrefix;
        int inChannels = Shape(U + "input_blocks.0.0.weight")[1];
        if (inChannels == 9)
            throw new CudaDreamException($"{path}: this is an inpainting checkpoint (9 UNet input channels); CudaDream imports text-to-image SD 1.x checkpoints only");
        if (inChannels != 4)
            throw new CudaDreamException($"{path}: the UNet takes {inChannels} input channels (an edit/depth variant?); CudaDream imports text-to-image SD 1.x checkpoints (4 channels) only");

        var attn2 = names.FirstOrDefault(n => n.StartsWith(U, StringComparison.Ordinal) && n.EndsWith(".attn2.to_k.weight", StringComparison.Ordinal));
        int crossDim = attn2 != null ? Shape(attn2)[1] : 768;
        if (crossDim == 1024)
            throw new CudaDreamException($"{path}: this is a Stable Diffusion 2.x checkpoint (cross-attention width 1024); CudaDream imports SD 1.x checkpoints only");

        int inputBlocks = CountIndices(names, U + "input_blocks.");
        int levels = names.Count(n => n.StartsWith(U + "input_blocks.", StringComparison.Ordinal) && n.EndsWith(".0.op.weight", StringComparison.Ordinal)) + 1;
        if (inputBlocks % levels != 0) throw new InvalidFileException(path, $"{inputBlocks} UNet input blocks do not divide into {levels} levels");
        int layers = inputBlocks / levels - 1;
        var channels = new int[levels];
        var downTypes = new string[levels];
        bool linearProjection = false;
        for (int i = 0; i < levels; i++)
        {
            int block = (layers + 1) * i + 1;
            var conv = $"{U}input_blocks.{block}.0.out_layers.3.weight";
            if (!Has(conv)) throw new InvalidFileException(path, $"missing {conv}");
            channels[i] = Shape(conv)[0];
            var projIn = $"{U}input_blocks.{block}.1.proj_in.weight";
            downTypes[i] = Has(projIn) ? "CrossAttnDownBlock2D" : "DownBlock2D";
            if (Has(projIn)) linearProjection = Shape(projIn).Length == 2;
        }
        var upTypes = Enumerable.Range(0, levels)
            .Select(i => Has($"{U}output_blocks.{(layers + 1) * i}.1.proj_in.weight") ? "CrossAttnUpBlock2D" : "UpBlock2D").ToArray();

        var unet = UNetConfig.Sd15 with
        {
            InChannels = inChannels,
            OutChannels = Shape(U + "out.2.weight")[0],
            BlockOutChannels = channels,
            DownBlockTypes = downTypes,
            UpBlockTypes = upTypes,
            LayersPerBlock = layers,
            AttentionHeads = Enumerable.Repeat(8, levels).ToArray(),
            CrossAttentionDim = crossDim,
            UseLinearProjection = linearProjection,
        };

        const string V = CheckpointNames.LdmVaePrefix;
        int vaeLevels = CountIndices(names, V + "encoder.down.");
        var vaeChannels = Enumerable.Range(0, vaeLevels).Select(i => Shape($"{V}encoder.down.{i}.block.0.conv1.weight")[0]).ToArray();
        var vae = VaeConfig.Sd15 with
        {
            InChannels = Shape(V + "encoder.conv_in.weight")[1],
            OutChannels = Shape(V + "decoder.conv_out.weight")[0],
            BlockOutChannels = vaeChannels,
            LayersPerBlock = CountIndices(names, V + "encoder.down.0.block."),
            LatentChannels = Shape(V + "quant_conv.weight")[0] / 2,
        };

        const string T = CheckpointNames.LdmTextPrefix;
        string tm = Has(T + "text_model.embeddings.token_embedding.weight") ? T + "text_model." : T;
        var tokens = Shape(tm + "embeddings.token_embedding.weight");
        int hidden = tokens[1];
        var text = ClipTextConfig.Sd15 with
        {
            VocabSize = tokens[0],
            HiddenSize = hidden,
            IntermediateSize = Shape(tm + "encoder.layers.0.mlp.fc1.weight")[0],
            NumLayers = CountIndices(names, tm + "encoder.layers."),
            NumHeads = hidden % 64 == 0 ? hidden / 64 : 1,
            MaxPositions = Shape(tm + "embeddings.position_embedding.weight")[0],
            ProjectionDim = hidden,
        };

        var config = new SdModelConfig(unet, vae, text);
        bool published = unet.BlockOutChannels.SequenceEqual(UNetConfig.Sd15.BlockOutChannels)
            && unet.LayersPerBlock == 2 && unet.DownBlockTypes.SequenceEqual(UNetConfig.Sd15.DownBlockTypes)
            && unet.UpBlockTypes.SequenceEqual(UNetConfig.Sd15.UpBlockTypes) && crossDim == 768 && !linearProjection
            && vae.BlockOutChannels.SequenceEqual(VaeConfig.Sd15.BlockOutChannels) && vae.LayersPerBlock == 2
            && hidden == 768 && text.NumLayers == 12;
        return new Detected(config, published);
    }

    /// <summary>
    /// Checks that <paramref name="config"/> (given by the user for a non-standard model) agrees with
    /// everything the shapes show; lists each disagreement.
    /// </summary>
    public static void CheckAgainstShapes(SdModelConfig config, Detected detected, string path)
    {
        var problems = new List<string>();
        void Same<T>(string what, T given, T seen)
        {
            bool equal = given is System.Collections.IEnumerable a && seen is System.Collections.IEnumerable b
                ? a.Cast<object>().SequenceEqual(b.Cast<object>())
                : Equals(given, seen);
            if (!equal) problems.Add($"{what}: config says {Show(given)}, the weights say {Show(seen)}");
        }
        static string Show(object? v) => v is System.Collections.IEnumerable e and not string ? "[" + string.Join(",", e.Cast<object>()) + "]" : $"{v}";
        var (u, d) = (config.UNet, detected.Config.UNet);
        Same("unet block_out_channels", u.BlockOutChannels, d.BlockOutChannels);
        Same("unet layers_per_block", u.LayersPerBlock, d.LayersPerBlock);
        Same("unet down_block_types", u.DownBlockTypes, d.DownBlockTypes);
        Same("unet up_block_types", u.UpBlockTypes, d.UpBlockTypes);
        Same("unet cross_attention_dim", u.CrossAttentionDim, d.CrossAttentionDim);
        Same("unet use_linear_projection", u.UseLinearProjection, d.UseLinearProjection);
        Same("unet in_channels", u.InChannels, d.InChannels);
        Same("unet out_channels", u.OutChannels, d.OutChannels);
        Same("vae block_out_channels", config.Vae.BlockOutChannels, detected.Config.Vae.BlockOutChannels);
        Same("vae layers_per_block", config.Vae.LayersPerBlock, detected.Config.Vae.LayersPerBlock);
        Same("vae latent_channels", config.Vae.LatentChannels, detected.Config.Vae.LatentChannels);
        var (t, dt) = (config.TextEncoder, detected.Config.TextEncoder);
        Same("text_encoder vocab_size", t.VocabSize, dt.VocabSize);
        Same("text_encoder hidden_size", t.HiddenSize, dt.HiddenSize);
        Same("text_encoder intermediate_size", t.IntermediateSize, dt.IntermediateSize);
        Same("text_encoder num_hidden_layers", t.NumLayers, dt.NumLayers);
        Same("text_encoder max_position_embeddings", t.MaxPositions, dt.MaxPositions);
        if (problems.Count > 0) throw new CudaDreamException($"{path}: the given config does not match the checkpoint: {string.Join("; ", problems)}");
    }

    /// <summary>
    /// Maps every weight of <paramref name="config"/> to its diffusers key. Missing and mis-shaped keys are
    /// listed in one error; keys nothing uses are returned as warnings (never dropped silently).
    /// <paramref name="useEma"/> takes the UNet from the <c>model_ema.*</c> copies.
    /// </summary>
    public static DiffusersWeights Read(SafetensorsFile file, SdModelConfig config, bool useEma, List<string> warnings)
    {
        var used = new HashSet<string>(StringComparer.Ordinal);
        var missing = new List<string>();
        var misshaped = new List<string>();
        var result = new Dictionary<string, Dictionary<string, Tensor>>
        {
            [Components.UNet] = new(StringComparer.Ordinal),
            [Components.Vae] = new(StringComparer.Ordinal),
            [Components.TextEncoder] = new(StringComparer.Ordinal),
        };

        foreach (var row in CheckpointNames.Table(config))
        {
            var candidates = new List<string>();
            if (useEma && row.Component == Components.UNet) candidates.Add(CheckpointNames.LdmEmaKey(row.Ldm));
            else
            {
                candidates.Add(row.Ldm);
                candidates.AddRange(CheckpointNames.LegacyLdmAliases(row));
                if (row.Component == Components.TextEncoder)
                    candidates.Add(CheckpointNames.LdmTextPrefix + row.Diffusers["text_model.".Length..]);
            }
            var found = candidates.FirstOrDefault(file.Contains);
            if (found == null) { missing.Add(candidates[0]); continue; }
            used.Add(found);
            var t = file.Get(found);
            if (Shapes.Equal(t.Shape, row.Shape)) { }
            else if (Shapes.Equal(t.Shape, row.LdmShape)) t = t.Reshape(row.Shape);
            else { misshaped.Add($"{found} is {Shapes.Format(t.Shape)}, expected {Shapes.Format(row.LdmShape)}"); continue; }
            if (!t.DType.IsFloat()) { misshaped.Add($"{found} has element type {t.DType}, expected a float type"); continue; }
            result[row.Component][row.Diffusers] = t;
        }

        if (missing.Count > 0 || misshaped.Count > 0)
        {
            var parts = new List<string>();
            if (missing.Count > 0) parts.Add($"{missing.Count} keys missing: {string.Join(", ", missing.Take(10))}{(missing.Count > 10 ? ", …" : "")}");
            if (misshaped.Count > 0) parts.Add($"{misshaped.Count} keys mis-shaped: {string.Join("; ", misshaped.Take(10))}{(misshaped.Count > 10 ? "; …" : "")}");
            throw new InvalidFileException(file.Path, string.Join("; ", parts));
        }

        ApplyPositionIds(file, config.TextEncoder, result[Components.TextEncoder], used, warnings);

        var unused = file.Names.Where(n => !used.Contains(n) && !IgnoredKeys.Contains(n)
            && !n.StartsWith(CheckpointNames.LdmEmaPrefix, StringComparison.Ordinal)).OrderBy(n => n, StringComparer.Ordinal).ToList();
        if (unused.Count > 0)
            warnings.Add($"{file.Path}: {unused.Count} keys unused: {string.Join(", ", unused.Take(10))}{(unused.Count > 10 ? ", …" : "")}");
        int ema = file.Names.Count(n => n.StartsWith(CheckpointNames.LdmEmaPrefix, StringComparison.Ordinal));
        if (ema > 0 && !useEma) warnings.Add($"{file.Path}: {ema} EMA weights (model_ema.*) skipped; --ema imports them instead of the UNet weights");

        return new DiffusersWeights(result[Components.UNet], result[Components.Vae], result[Components.TextEncoder]);
    }

    /// <summary>
    /// Some checkpoints store <c>position_ids</c> as floats a little off their integer values (an fp16
    /// round trip); transformers would truncate them. They are rounded; a non-identity order is baked
    /// into the position embedding rows, since the graph indexes positions 0..N−1.
    /// </summary>
    private static void ApplyPositionIds(SafetensorsFile file, ClipTextConfig text, Dictionary<string, Tensor> weights, HashSet<string> used, List<string> warnings)
    {
        string key = file.Contains(PositionIdsKey) ? PositionIdsKey : CheckpointNames.LdmTextPrefix + "embeddings.position_ids";
        if (!file.Contains(key)) return;
        used.Add(key);
        var raw = file.Get(key);
        if (raw.Numel != text.MaxPositions) throw new InvalidFileException(file.Path, $"{key} has {raw.Numel} entries, expected {text.MaxPositions}");
        var ids = raw.ToFloat64Array().Select(v => (int)Math.Round(v)).ToArray();
        if (ids.Any(i => i < 0 || i >= text.MaxPositions)) throw new InvalidFileException(file.Path, $"{key} holds positions outside 0..{text.MaxPositions - 1}");
        if (ids.Select((v, i) => v == i).All(b => b)) return;
        warnings.Add($"{file.Path}: {key} is not 0..{text.MaxPositions - 1} after rounding; its order is applied to the position embeddings");
        const string pe = "text_model.embeddings.position_embedding.weight";
        var src = weights[pe].To(DType.F32);
        int d = text.HiddenSize;
        var table = src.ReadOnlySpan<float>();
        var permuted = new float[ids.Length * d];
        for (int i = 0; i < ids.Length; i++) table.Slice(ids[i] * d, d).CopyTo(permuted.AsSpan(i * d, d));
        weights[pe] = Tensor.FromArray(permuted, ids.Length, d).To(weights[pe].DType);
    }

    private static int CountIndices(IEnumerable<string> names, string prefix)
    {
        var seen = new HashSet<int>();
        foreach (var n in names)
        {
            if (!n.StartsWith(prefix, StringComparison.Ordinal)) continue;
            var rest = n.AsSpan(prefix.Length);
            int dot = rest.IndexOf('.');
            if (dot > 0 && int.TryParse(rest[..dot], out int i)) seen.Add(i);
        }
        return seen.Count;
    }
}
