using System.Globalization;
using System.Reflection;
using System.Text;
using System.Text.Json;
using CudaDream.Engine;

namespace CudaDream.Diffusion.Training;

/// <summary>A configuration with problems: the message has one line per problem.</summary>
public sealed class ConfigException(IReadOnlyList<string> problems)
    : CudaDreamException(string.Join(Environment.NewLine, problems))
{
    public IReadOnlyList<string> Problems { get; } = problems;
}

/// <summary>A loaded configuration and the notices about it (ignored extension fields, warnings).</summary>
public sealed record LoadedConfig(DreamBoothOptions Options, IReadOnlyList<string> Notices);

/// <summary>
/// Reads <see cref="DreamBoothOptions"/> from a JSON file and/or flags (flags win), and validates them,
/// collecting every problem before anything runs. Settings are found by reflection over the options
/// records, so a setting is declared once, with its help text, as a property.
/// </summary>
public static class DreamBoothConfig
{
    public const long MaxConfigBytes = 4 << 20;

    /// <summary>Fields of the AUTOMATIC1111 DreamBooth extension that CudaDream accepts and does not use.</summary>
    private static readonly HashSet<string> ExtensionFields = new(StringComparer.Ordinal)
    {
        "is_valid", "num_class_images", "save_sample_template",
        "adamw_weight_decay", "attention", "cache_latents", "concepts_path", "custom_model_name", "deterministic", "disable_class_matching",
        "disable_logging", "ema_predict", "epoch", "epoch_pause_frequency", "epoch_pause_time", "freeze_clip_normalization",
        "gradient_set_to_none", "graph_smoothing", "half_model", "has_ema", "hflip", "infer_ema", "initial_revision", "learning_rate_min",
        "lifetime_revision", "lora_learning_rate", "lora_model_name", "lora_txt_learning_rate", "lora_txt_rank", "lora_txt_weight",
        "lora_unet_rank", "lora_weight", "lora_use_buggy_requires_grad", "lr_cycles", "lr_factor", "lr_scale_pos", "max_token_length",
        "model_dir", "model_name", "model_path", "model_type", "noise_scheduler", "offset_noise", "pad_tokens", "pretrained_model_name_or_path",
        "pretrained_vae_name_or_path", "prior_loss_scale", "prior_loss_target", "prior_loss_weight_min", "revision", "sample_batch_size",
        "sanity_prompt", "sanity_seed", "save_ckpt_after", "save_ckpt_cancel", "save_ckpt_during", "save_ema", "save_embedding_every",
        "save_lora_after", "save_lora_cancel", "save_lora_during", "save_lora_for_extra_net", "save_preview_every", "save_safetensors",
        "save_state_after", "save_state_cancel", "save_state_during", "scheduler", "shuffle_tags", "snapshot", "split_loss", "src",
        "stop_text_encoder", "strict_tokens", "dynamic_img_norm", "tenc_grad_clip_norm", "tenc_weight_decay", "tf32_enable", "train_imagic",
        "train_unet", "train_unfrozen", "txt_learning_rate", "use_concepts", "use_lora", "use_lora_extended", "use_shared_src",
        "use_subdir", "v2", "weight_decay", "use_8bit_adam", "save_class_txt", "freeze_spectral_norm", "min_snr_gamma_enabled",
    };

    public static readonly IReadOnlyDictionary<string, PropertyInfo> RunSettings = SettingsOf(typeof(DreamBoothOptions));
    public static readonly IReadOnlyDictionary<string, PropertyInfo> ConceptSettings = SettingsOf(typeof(ConceptOptions));

    private static Dictionary<string, PropertyInfo> SettingsOf(Type t) =>
        t.GetProperties().Where(p => p.GetCustomAttribute<SettingAttribute>() != null).ToDictionary(p => SnakeCase(p.Name), StringComparer.Ordinal);

    public static string SnakeCase(string pascal)
    {
        var sb = new StringBuilder();
        for (int i = 0; i < pascal.Length; i++)
        {
            char c = pascal[i];
            if (char.IsUpper(c) && i > 0 && (!char.IsUpper(pascal[i - 1]) || (i + 1 < pascal.Length && char.IsLower(pascal[i + 1])))) sb.Append('_');
            sb.Append(char.ToLowerInvariant(c));
        }
        return sb.ToString();
    }

    /// <summary>Loads the file (if any), applies the flags, validates; throws <see cref="ConfigException"/> listing every problem.</summary>
    public static LoadedConfig Load(string? configPath, IReadOnlyList<string> flags, bool checkPaths = true)
    {
        var problems = new List<string>();
        var notices = new List<string>();
        var ignored = new SortedSet<string>(StringComparer.Ordinal);
        object options = new DreamBoothOptions();
        if (configPath != null)
        {
            var root = ReadJson(configPath, problems);
            if (root is { } r)
            {
                string baseDir = Path.GetDirectoryName(Path.GetFullPath(configPath))!;
                if (r.ValueKind == JsonValueKind.Array)
                    options = ((DreamBoothOptions)options) with { Concepts = ReadConcepts(r, configPath, baseDir, problems, ignored) };
                else if (r.ValueKind == JsonValueKind.Object)
                    options = ApplyJson(r, (DreamBoothOptions)options, configPath, baseDir, problems, ignored);
                else problems.Add($"{configPath}: the configuration must be a JSON object (or a concepts list)");
            }
        }
        options = ApplyFlags((DreamBoothOptions)options, flags, problems, ignored);
        if (ignored.Count > 0) notices.Add($"notice: ignoring settings of the AUTOMATIC1111 DreamBooth extension that CudaDream does not use: {string.Join(", ", ignored)}");
        var o = (DreamBoothOptions)options;
        if (problems.Count == 0) problems.AddRange(Validate(o, checkPaths));
        if (problems.Count > 0) throw new ConfigException(problems);
        return new LoadedConfig(o, notices);
    }

    private static JsonElement? ReadJson(string path, List<string> problems)
    {
        if (!File.Exists(path)) { problems.Add($"{path}: file not found"); return null; }
        if (new FileInfo(path).Length > MaxConfigBytes) { problems.Add($"{path}: larger than {MaxConfigBytes} bytes"); return null; }
        try
        {
            using var doc = JsonDocument.Parse(Engine.Formats.Utf8Text.Require(path, File.ReadAllBytes(path)), new JsonDocumentOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip, MaxDepth = 16 });
            return doc.RootElement.Clone();
        }
        catch (JsonException e) { problems.Add($"{path}: not valid JSON ({e.Message})"); return null; }
        catch (InvalidFileException e) { problems.Add(e.Message); return null; }
    }

    private static DreamBoothOptions ApplyJson(JsonElement root, DreamBoothOptions o, string source, string baseDir, List<string> problems, SortedSet<string> ignored)
    {
        foreach (var p in root.EnumerateObject())
        {
            if (p.Name == "concepts" || p.Name == "concepts_list")
            {
                o = o with { Concepts = ReadConcepts(p.Value, source, baseDir, problems, ignored) };
                continue;
            }
            if (RunSettings.TryGetValue(p.Name, out var prop))
            {
                if (FromJson(p.Value, prop.PropertyType, out var value))
                {
                    // Paths in a file are relative to the file.
                    if (value is string path && path.Length > 0 && IsPathSetting(prop.Name))
                        value = Path.GetFullPath(Path.Combine(baseDir, path));
                    o = With(o, prop, value);
                }
                else problems.Add($"{source}: '{p.Name}' must be {Describe(prop.PropertyType)}, got {p.Value.GetRawText()}");
            }
            else if (ExtensionFields.Contains(p.Name)) ignored.Add(p.Name);
            else problems.Add($"{source}: unknown setting '{p.Name}'{Suggest(p.Name, RunSettings.Keys.Append("concepts"))}");
        }
        return o;
    }

    private static IReadOnlyList<ConceptOptions> ReadConcepts(JsonElement v, string source, string baseDir, List<string> problems, SortedSet<string> ignored)
    {
        if (v.ValueKind == JsonValueKind.String)
        {
            // A path to a concepts-list file, relative to the file that names it.
            var path = Path.GetFullPath(Path.Combine(baseDir, v.GetString()!));
            var root = ReadJson(path, problems);
            if (root == null) return Array.Empty<ConceptOptions>();
            return ReadConcepts(root.Value, path, Path.GetDirectoryName(path)!, problems, ignored);
        }
        if (v.ValueKind != JsonValueKind.Array) { problems.Add($"{source}: 'concepts' must be a list of concept objects or a path"); return Array.Empty<ConceptOptions>(); }
        var list = new List<ConceptOptions>();
        int index = 0;
        foreach (var c in v.EnumerateArray())
        {
            if (c.ValueKind != JsonValueKind.Object) { problems.Add($"{source}: concept {index} is not an object"); index++; continue; }
            var concept = new ConceptOptions();
            foreach (var p in c.EnumerateObject())
            {
                if (ConceptSettings.TryGetValue(p.Name, out var prop))
                {
                    if (!FromJson(p.Value, prop.PropertyType, out var value)) { problems.Add($"{source}: concept {index}: '{p.Name}' must be {Describe(prop.PropertyType)}, got {p.Value.GetRawText()}"); continue; }
                    if (value is string s && prop.Name.EndsWith("DataDir", StringComparison.Ordinal) && s.Length > 0) value = Path.GetFullPath(Path.Combine(baseDir, s));
                    concept = With(concept, prop, value);
                }
                else if (ExtensionFields.Contains(p.Name)) ignored.Add(p.Name);
                else problems.Add($"{source}: concept {index}: unknown field '{p.Name}'{Suggest(p.Name, ConceptSettings.Keys)}");
            }
            list.Add(concept);
            index++;
        }
        return list;
    }

    /// <summary>
    /// Flags: <c>--snake-name value</c> for every run setting (bools may omit the value), <c>--concepts FILE</c>, and the
    /// concept fields (<c>--instance-data-dir</c>, <c>--class-prompt</c>, …) which set the single concept of a one-concept run.
    /// </summary>
    private static DreamBoothOptions ApplyFlags(DreamBoothOptions o, IReadOnlyList<string> flags, List<string> problems, SortedSet<string> ignored)
    {
        ConceptOptions? single = null;
        for (int i = 0; i < flags.Count; i++)
        {
            var f = flags[i];
            if (!f.StartsWith("--", StringComparison.Ordinal)) { problems.Add($"unexpected argument '{f}'"); continue; }
            var name = f[2..].Replace('-', '_');
            string? inline = null;
            int eq = name.IndexOf('=');
            if (eq >= 0) { inline = name[(eq + 1)..]; name = name[..eq]; }
            string? NextValue()
            {
                if (inline != null) return inline;
                if (i + 1 < flags.Count && !flags[i + 1].StartsWith("--", StringComparison.Ordinal)) return flags[++i];
                return null;
            }
            if (name == "concepts")
            {
                var path = NextValue();
                if (path == null) { problems.Add("--concepts needs a file"); continue; }
                var root = ReadJson(path, problems);
                if (root != null) o = o with { Concepts = ReadConcepts(root.Value.ValueKind == JsonValueKind.Object && root.Value.TryGetProperty("concepts", out var inner) ? inner : root.Value, path, Path.GetDirectoryName(Path.GetFullPath(path))!, problems, ignored) };
                continue;
            }
            bool isRun = RunSettings.TryGetValue(name, out var prop);
            bool isConcept = !isRun && ConceptSettings.TryGetValue(name, out prop);
            if (prop == null) { problems.Add($"unknown flag '{f}'{Suggest(name, RunSettings.Keys.Concat(ConceptSettings.Keys), "--", '-')}"); continue; }
            var type = prop.PropertyType;
            var raw = NextValue();
            if (raw == null && (type == typeof(bool))) raw = "true";
            if (raw == null) { problems.Add($"{f} needs a value ({Describe(type)})"); continue; }
            if (!FromString(raw, type, out var value)) { problems.Add($"{f}: '{raw}' is not {Describe(type)}"); continue; }
            if (isRun)
            {
                // Paths given as flags are relative to the working directory; stored absolute (config.json, resume) like paths from a file.
                if (value is string path && path.Length > 0 && IsPathSetting(prop.Name))
                    value = Path.GetFullPath(path);
                o = With(o, prop, value);
            }
            else
            {
                if (value is string s && prop.Name.EndsWith("DataDir", StringComparison.Ordinal) && s.Length > 0) value = Path.GetFullPath(s);
                single = With(single ?? (o.Concepts.Count == 1 ? o.Concepts[0] : new ConceptOptions()), prop, value);
            }
        }
        if (single != null)
        {
            if (o.Concepts.Count > 1) problems.Add("concept flags (--instance-data-dir, ...) set a single concept, but the configuration has several; edit the concepts list instead");
            else o = o with { Concepts = new[] { single } };
        }
        return o;
    }

    private static bool IsPathSetting(string property) => property is nameof(DreamBoothOptions.Model) or nameof(DreamBoothOptions.OutputDir)
        or nameof(DreamBoothOptions.ValidationDataDir) or nameof(DreamBoothOptions.LoggingDir);

    private static T With<T>(T record, PropertyInfo prop, object? value) where T : class
    {
        // Records: clone through the compiler's <Clone>$ and set the init-only property on the copy.
        var clone = (T)typeof(T).GetMethod("<Clone>$")!.Invoke(record, null)!;
        prop.SetValue(clone, value);
        return clone;
    }

    private static string Describe(Type t)
    {
        t = Nullable.GetUnderlyingType(t) ?? t;
        if (t == typeof(int) || t == typeof(long)) return "an integer";
        if (t == typeof(double)) return "a number";
        if (t == typeof(bool)) return "true or false";
        if (t == typeof(IReadOnlyList<string>)) return "a list of strings";
        return "a string";
    }

    private static bool FromJson(JsonElement v, Type t, out object? value)
    {
        value = null;
        var u = Nullable.GetUnderlyingType(t);
        if (v.ValueKind == JsonValueKind.Null) return u != null || !t.IsValueType;
        t = u ?? t;
        switch (v.ValueKind)
        {
            case JsonValueKind.String when t == typeof(string): value = v.GetString(); return true;
            case JsonValueKind.String: return FromString(v.GetString()!, t, out value);
            case JsonValueKind.Number when t == typeof(int): if (v.TryGetInt32(out var i)) { value = i; return true; } return false;
            case JsonValueKind.Number when t == typeof(long): if (v.TryGetInt64(out var l)) { value = l; return true; } return false;
            case JsonValueKind.Number when t == typeof(double): value = v.GetDouble(); return true;
            case JsonValueKind.Number when t == typeof(string): value = v.GetRawText(); return true;
            case JsonValueKind.True or JsonValueKind.False when t == typeof(bool): value = v.GetBoolean(); return true;
            case JsonValueKind.Array when t == typeof(IReadOnlyList<string>):
                if (v.EnumerateArray().Any(e => e.ValueKind != JsonValueKind.String)) return false;
                value = v.EnumerateArray().Select(e => e.GetString()!).ToList();
                return true;
            default: return false;
        }
    }

    private static bool FromString(string s, Type t, out object? value)
    {
        value = null;
        t = Nullable.GetUnderlyingType(t) ?? t;
        if (t == typeof(string)) { value = s; return true; }
        if (t == typeof(int)) { if (int.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out var i)) { value = i; return true; } return false; }
        if (t == typeof(long)) { if (long.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out var l)) { value = l; return true; } return false; }
        if (t == typeof(double)) { if (double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out var d)) { value = d; return true; } return false; }
        if (t == typeof(bool)) { if (bool.TryParse(s, out var b)) { value = b; return true; } return false; }
        if (t == typeof(IReadOnlyList<string>)) { value = s.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToList(); return true; }
        return false;
    }

    private static string Suggest(string name, IEnumerable<string> known, string prefix = "", char sep = '_')
    {
        var best = known.Select(k => (k, d: Levenshtein(name, k))).OrderBy(x => x.d).FirstOrDefault();
        return best.k != null && best.d <= Math.Max(2, name.Length / 4) ? $" (did you mean '{prefix}{best.k.Replace('_', sep)}'?)" : "";
    }

    private static int Levenshtein(string a, string b)
    {
        var d = new int[a.Length + 1, b.Length + 1];
        for (int i = 0; i <= a.Length; i++) d[i, 0] = i;
        for (int j = 0; j <= b.Length; j++) d[0, j] = j;
        for (int i = 1; i <= a.Length; i++)
            for (int j = 1; j <= b.Length; j++)
                d[i, j] = Math.Min(Math.Min(d[i - 1, j] + 1, d[i, j - 1] + 1), d[i - 1, j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1));
        return d[a.Length, b.Length];
    }

    public static readonly string[] Optimizers = { "adamw", "adamw8bit", "prodigy", "lion", "sgd" };

    /// <summary>The problems of the data settings: buckets, masks, captions, validation.</summary>
    private static IEnumerable<string> DataProblems(DreamBoothOptions o, bool checkPaths)
    {
        int steps = o.BucketResoSteps;
        if (!(steps >= 8 && steps % 8 == 0)) yield return $"bucket_reso_steps: {steps} must be a positive multiple of 8 (the latent grid)";
        else
        {
            if (o.MinBucketReso < steps || o.MinBucketReso % steps != 0) yield return $"min_bucket_reso: {o.MinBucketReso} must be a positive multiple of bucket_reso_steps {steps}";
            if (o.MaxBucketReso % steps != 0) yield return $"max_bucket_reso: {o.MaxBucketReso} must be a multiple of bucket_reso_steps {steps}";
        }
        if (o.MaxBucketReso < o.MinBucketReso) yield return $"max_bucket_reso: {o.MaxBucketReso} is below min_bucket_reso {o.MinBucketReso}";
        if (o.EnableBucket && TryParseResolution(o.Resolution, out int w, out int h) && (o.MaxBucketReso < w || o.MaxBucketReso < h))
            yield return $"max_bucket_reso: {o.MaxBucketReso} is below the resolution {o.Resolution} (kohya requires max_bucket_reso ≥ each side)";
        if (!(o.CaptionExtension.Length >= 2 && o.CaptionExtension[0] == '.' && o.CaptionExtension.IndexOfAny(Path.GetInvalidFileNameChars()) < 0 && o.CaptionExtension.IndexOf('.', 1) < 0))
            yield return $"caption_extension: '{o.CaptionExtension}' is not a file extension such as .txt or .caption";
        if (o.KeepTokens < 0) yield return "keep_tokens: must not be negative";
        if (!(o.CaptionDropoutRate is >= 0 and <= 1)) yield return $"caption_dropout_rate: {o.CaptionDropoutRate} must be in [0, 1]";
        if (!(o.CaptionTagDropoutRate is >= 0 and <= 1)) yield return $"caption_tag_dropout_rate: {o.CaptionTagDropoutRate} must be in [0, 1]";
        if (!(o.ValidationSplit is >= 0 and < 1)) yield return $"validation_split: {o.ValidationSplit} must be in [0, 1)";
        if (o.ValidationSplit > 0 && o.ValidationDataDir.Length > 0) yield return "validation_split, validation_data_dir: choose one";
        if (o.ValidationDataDir.Length > 0 && checkPaths && !Directory.Exists(o.ValidationDataDir)) yield return $"validation_data_dir: folder '{o.ValidationDataDir}' not found";
        if (o.ValidationEveryNSteps < 0) yield return "validation_every_n_steps: must not be negative";
    }

    public static readonly string[] LrSchedulers = { "constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial" };

    /// <summary>Every problem of a configuration, one line each (empty when it is valid).</summary>
    public static List<string> Validate(DreamBoothOptions o, bool checkPaths = true)
    {
        var p = new List<string>();
        void Check(bool ok, string problem) { if (!ok) p.Add(problem); }
        Check(o.Model.Length > 0, "model: required (a diffusers ONNX model folder)");
        if (o.Model.Length > 0 && checkPaths)
            Check(Directory.Exists(o.Model), $"model: folder '{o.Model}' not found{(File.Exists(o.Model) && o.Model.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase) ? " (it is a checkpoint file: convert it with `cudadream import`)" : "")}");
        Check(o.OutputDir.Length > 0, "output_dir: required");
        if (o.OutputDir.Length > 0 && checkPaths) Check(!File.Exists(o.OutputDir), $"output_dir: '{o.OutputDir}' is a file, not a folder");
        Check(o.Name.Length > 0 && o.Name.IndexOfAny(Path.GetInvalidFileNameChars()) < 0, $"name: '{o.Name}' is not a valid file name");
        if (!TryParseResolution(o.Resolution, out _, out _)) p.Add($"resolution: '{o.Resolution}' is not a positive multiple of 8 (N or WxH)");
        if (o.SampleResolution != null && !TryParseResolution(o.SampleResolution, out _, out _)) p.Add($"sample_resolution: '{o.SampleResolution}' is not a positive multiple of 8 (N or WxH)");
        if (o.SampleCellSize < 1 || o.SampleCellSize > 2048) p.Add($"sample_cell_size: {o.SampleCellSize} is not between 1 and 2048 pixels");
        Check(o.LatentSampling is "mean" or "sample", $"latent_sampling: '{o.LatentSampling}' is not mean or sample");
        Check(o.Concepts.Count > 0, "concepts: at least one concept is required (instance_data_dir, instance_prompt, ...)");
        for (int i = 0; i < o.Concepts.Count; i++)
        {
            var c = o.Concepts[i];
            string at = $"concept {i}";
            if (c.InstanceDataDir.Length == 0) p.Add($"{at}: instance_data_dir is required");
            else if (checkPaths && !Directory.Exists(c.InstanceDataDir)) p.Add($"{at}: instance_data_dir '{c.InstanceDataDir}' not found");
            Check(c.InstancePrompt.Length > 0, $"{at}: instance_prompt is empty");
            Check(c.NumClassImagesPer >= 0, $"{at}: num_class_images_per must not be negative");
            if (c.NumClassImagesPer > 0) Check(c.ClassPrompt.Length > 0, $"{at}: class_prompt is required for prior preservation (num_class_images_per > 0)");
            Check(c.ClassGuidanceScale >= 0 && c.SaveGuidanceScale >= 0, $"{at}: guidance scales must not be negative");
            Check(c.ClassInferSteps >= 1 && c.SaveInferSteps >= 1, $"{at}: class_infer_steps and save_infer_steps must be at least 1");
            Check(c.NSaveSample >= 0, $"{at}: n_save_sample must not be negative");
            Check(c.SaveSamplePrompts.All(s => s.Length > 0), $"{at}: save_sample_prompts must not hold an empty prompt");
            if (checkPaths && o.OutputDir.Length > 0) p.AddRange(OutputOverlap(o.OutputDir, c, at));
        }
        Check(o.TrainBatchSize >= 1, "train_batch_size: must be at least 1");
        Check(o.GradientAccumulationSteps >= 1, "gradient_accumulation_steps: must be at least 1");
        Check(o.MaxTrainSteps >= 0, "max_train_steps: must not be negative");
        Check(o.MaxTrainSteps > 0 || o.NumTrainEpochs > 0, "max_train_steps or num_train_epochs: one must be positive");
        Check(double.IsFinite(o.LearningRate) && o.LearningRate >= 0, $"learning_rate: {o.LearningRate} must be a non-negative number");
        Check(o.TextEncoderLr is null || (double.IsFinite(o.TextEncoderLr.Value) && o.TextEncoderLr >= 0), $"text_encoder_lr: {o.TextEncoderLr} must be a non-negative number");
        Check(LrSchedulers.Contains(o.LrScheduler), $"lr_scheduler: '{o.LrScheduler}' is not one of {string.Join(", ", LrSchedulers)}");
        Check(o.LrWarmupSteps >= 0, "lr_warmup_steps: must not be negative");
        // diffusers' polynomial schedule decays to lr_end = 1e-7, which needs a larger starting rate.
        Check(o.LrScheduler != "polynomial" || o.LearningRate > 1e-7, $"lr_scheduler polynomial: learning_rate {o.LearningRate} must be above the schedule's final rate 1e-7");
        Check(Optimizers.Contains(o.Optimizer), $"optimizer: '{o.Optimizer}' is not one of {string.Join(", ", Optimizers)}");
        Check(o.LionBeta1 is >= 0 and < 1 && o.LionBeta2 is >= 0 and < 1, "lion_beta1, lion_beta2: must be in [0, 1)");
        Check(o.ProdigyD0 > 0 && double.IsFinite(o.ProdigyD0), $"prodigy_d0: {o.ProdigyD0} must be positive");
        Check(o.ProdigyDCoef > 0 && double.IsFinite(o.ProdigyDCoef), $"prodigy_d_coef: {o.ProdigyDCoef} must be positive");
        Check(o.EmaDecay is >= 0 and <= 1, $"ema_decay: {o.EmaDecay} must be in [0, 1]");
        Check(!o.EmaSaveRaw || o.UseEma, "ema_save_raw: needs use_ema (without EMA the written result is the raw one)");
        Check(o.LogWith is "none" or "tensorboard", $"log_with: '{o.LogWith}' is not none or tensorboard");
        Check(o.LoggingDir.Length == 0 || o.LogWith == "tensorboard", "logging_dir: set, but log_with is not tensorboard");
        if (o.LoggingDir.Length > 0 && checkPaths) Check(!File.Exists(o.LoggingDir), $"logging_dir: '{o.LoggingDir}' is a file, not a folder");
        p.AddRange(DataProblems(o, checkPaths));
        Check(o.AdamBeta1 is >= 0 and < 1 && o.AdamBeta2 is >= 0 and < 1, "adam_beta1, adam_beta2: must be in [0, 1)");
        Check(o.AdamEpsilon > 0, "adam_epsilon: must be positive");
        Check(o.AdamWeightDecay >= 0, "adam_weight_decay: must not be negative");
        Check(o.SgdMomentum is >= 0 and < 1, "sgd_momentum: must be in [0, 1)");
        Check(o.MaxGradNorm >= 0, "max_grad_norm: must not be negative");
        Check(o.MixedPrecision is "no" or "fp16" or "bf16", $"mixed_precision: '{o.MixedPrecision}' is not no, fp16 or bf16");
        Check(o.Backend == "auto" || IsBackend(o.Backend), $"backend: '{o.Backend}' is not auto, cpu, cuda[:N] or emu[75|80|90]");
        Check(!(o.Backend == "cpu" && o.MixedPrecision != "no"), $"mixed_precision: {o.MixedPrecision} needs the CUDA backend (the CPU backend trains in fp32)");
        Check(o.SampleEngine is "auto" or "ort" or "cudadream", $"sample_engine: '{o.SampleEngine}' is not auto, ort or cudadream");
        Check(o.PriorLossWeight >= 0, "prior_loss_weight: must not be negative");
        Check(o.NoiseOffset >= 0, "noise_offset: must not be negative");
        Check(o.MinSnrGamma >= 0, "min_snr_gamma: must not be negative");
        Check(o.PredictionType is null or "epsilon" or "v_prediction", $"prediction_type: '{o.PredictionType}' is not epsilon or v_prediction");
        Check(o.ClipSkip >= 1, "clip_skip: must be at least 1");
        Check(o.LoraRank >= 1 && (o.LoraConvRank ?? 1) >= 1, "lora_rank, lora_conv_rank: must be at least 1");
        Check((o.LoraAlpha ?? 1) > 0 && (o.LoraConvAlpha ?? 1) > 0, "lora_alpha, lora_conv_alpha: must be positive");
        Check(o.LoraDropout is >= 0 and < 1, "lora_dropout: must be in [0, 1)");
        Check(o.LoraTargets.Count > 0 || o.TrainLayers.Count > 0, "lora_targets: at least one target (or train_layers for selected-layer fine-tuning)");
        Check(o.LoraInit is "kaiming" or "normal", $"lora_init: '{o.LoraInit}' is not kaiming or normal");
        Check(o.SampleEveryNSteps >= 0 && o.SaveEveryNSteps >= 0 && o.CheckpointEveryNSteps >= 0 && o.EvalEveryNSteps >= 0, "*_every_n_steps: must not be negative");
        Check(!(o.Resume && o.Overwrite), "resume, overwrite: choose one (resume continues the earlier run, overwrite deletes it)");
        Check(o.CheckpointsToKeep >= 1, "checkpoints_to_keep: must be at least 1");
        Check(o.EvalExamples >= 1, "eval_examples: must be at least 1");
        Check(Schedulers.SchedulerFactory.Names.Contains(o.SampleScheduler), $"sample_scheduler: '{o.SampleScheduler}' is not one of {string.Join(", ", Schedulers.SchedulerFactory.Names)}");
        return p;
    }

    /// <summary>
    /// An output_dir that is (or lies inside) an instance or class folder would make the next run train on its own
    /// loss.png and sample grids; an instance folder inside output_dir would train on what the run writes.
    /// </summary>
    private static IEnumerable<string> OutputOverlap(string outputDir, ConceptOptions c, string at)
    {
        if (c.InstanceDataDir.Length > 0 && Engine.Formats.FilePaths.IsSameOrInside(outputDir, c.InstanceDataDir))
            yield return $"output_dir: '{outputDir}' is {(Engine.Formats.FilePaths.Same(outputDir, c.InstanceDataDir) ? "" : "inside ")}the instance_data_dir of {at}; the run's own images (loss.png, samples) would become training data: choose another folder";
        else if (c.InstanceDataDir.Length > 0 && Engine.Formats.FilePaths.IsSameOrInside(c.InstanceDataDir, outputDir))
            yield return $"{at}: instance_data_dir '{c.InstanceDataDir}' lies inside output_dir '{outputDir}', where the run writes: keep training images elsewhere";
        if (c.ClassDataDir.Length > 0 && Engine.Formats.FilePaths.IsSameOrInside(outputDir, c.ClassDataDir))
            yield return $"output_dir: '{outputDir}' is {(Engine.Formats.FilePaths.Same(outputDir, c.ClassDataDir) ? "" : "inside ")}the class_data_dir of {at}; the run's own images would become class images: choose another folder";
    }

    private static bool IsBackend(string name)
    {
        try { Engine.ExecutionBackend.Parse(name); return true; }
        catch (CudaDreamException) { return false; }
    }

    public static bool TryParseResolution(string s, out int width, out int height)
    {
        width = height = 0;
        var parts = s.ToLowerInvariant().Split('x');
        if (parts.Length is < 1 or > 2) return false;
        if (!int.TryParse(parts[0], out width) || !int.TryParse(parts[^1], out height)) return false;
        return width > 0 && height > 0 && width % 8 == 0 && height % 8 == 0;
    }

    /// <summary>Help text for every setting (for `cudadream train --help`).</summary>
    public static string Help()
    {
        var sb = new StringBuilder();
        sb.AppendLine("cudadream train [--config run.json] [--setting value ...]");
        sb.AppendLine("Settings (JSON key / --flag-name). Flags override the file.");
        foreach (var (name, prop) in RunSettings)
            sb.AppendLine($"  --{name.Replace('_', '-'),-30} {prop.GetCustomAttribute<SettingAttribute>()!.Help}");
        sb.AppendLine("Concept fields (in \"concepts\": [...]; as flags they set a single concept):");
        foreach (var (name, prop) in ConceptSettings)
            sb.AppendLine($"  --{name.Replace('_', '-'),-30} {prop.GetCustomAttribute<SettingAttribute>()!.Help}");
        return sb.ToString();
    }
}
