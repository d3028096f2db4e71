using System.Globalization;
using System.Text;
using System.Text.Json;
using CudaDream.Engine;

namespace CudaDream.Diffusion.Schedulers;

/// <summary>
/// A model's <c>scheduler/scheduler_config.json</c>, with diffusers' snake_case keys. A property is null when the
/// file does not set it: each scheduler then takes its own class default, exactly as diffusers'
/// <c>Scheduler.from_config</c> does (so e.g. SD 1.5's file, which has no <c>timestep_spacing</c>, gives DDIM
/// "leading" and Euler "linspace"). <see cref="StableDiffusion15"/> is SD 1.5's file, the configuration to use
/// when a model comes without one. Unknown keys are ignored; a value of the wrong type or out of range is an
/// <see cref="InvalidFileException"/> naming the file and the key.
/// </summary>
public sealed record SchedulerConfig
{
    /// <summary><c>_class_name</c>, e.g. "PNDMScheduler".</summary>
    public string? ClassName { get; init; }
    public int? NumTrainTimesteps { get; init; }
    public double? BetaStart { get; init; }
    public double? BetaEnd { get; init; }
    /// <summary>linear | scaled_linear | squaredcos_cap_v2.</summary>
    public string? BetaSchedule { get; init; }
    /// <summary>Explicit betas, overriding the schedule (one per training timestep).</summary>
    public float[]? TrainedBetas { get; init; }
    /// <summary>epsilon | v_prediction | sample.</summary>
    public string? PredictionType { get; init; }
    /// <summary>leading | linspace | trailing (Lin et al. 2023, Table 2).</summary>
    public string? TimestepSpacing { get; init; }
    public int? StepsOffset { get; init; }
    public bool? SetAlphaToOne { get; init; }
    public bool? SkipPrkSteps { get; init; }
    public bool? ClipSample { get; init; }
    public double? ClipSampleRange { get; init; }
    public bool? Thresholding { get; init; }
    public bool? RescaleBetasZeroSnr { get; init; }
    public bool? UseKarrasSigmas { get; init; }
    /// <summary>Euler: linear (log_linear is not supported).</summary>
    public string? InterpolationType { get; init; }
    /// <summary>DDPM: fixed_small | fixed_small_log | fixed_large | fixed_large_log.</summary>
    public string? VarianceType { get; init; }
    public int? SolverOrder { get; init; }
    /// <summary>DPM-Solver: dpmsolver++ | dpmsolver.</summary>
    public string? AlgorithmType { get; init; }
    /// <summary>DPM-Solver: midpoint | heun; UniPC: bh1 | bh2.</summary>
    public string? SolverType { get; init; }
    public bool? LowerOrderFinal { get; init; }
    public double? LambdaMinClipped { get; init; }
    /// <summary>UniPC: predict x0 (data prediction) rather than noise.</summary>
    public bool? PredictX0 { get; init; }
    /// <summary>UniPC: step indices whose corrector is skipped.</summary>
    public int[]? DisableCorrector { get; init; }

    /// <summary>The file this config was read from (used to name it in errors); not a JSON key.</summary>
    public string? SourcePath { get; init; }

    /// <summary>runwayml/stable-diffusion-v1-5 scheduler/scheduler_config.json (PNDMScheduler).</summary>
    public static SchedulerConfig StableDiffusion15 { get; } = new()
    {
        ClassName = "PNDMScheduler",
        NumTrainTimesteps = 1000,
        BetaStart = 0.00085,
        BetaEnd = 0.012,
        BetaSchedule = "scaled_linear",
        PredictionType = "epsilon",
        StepsOffset = 1,
        SetAlphaToOne = false,
        SkipPrkSteps = true,
        ClipSample = false,
    };

    public const long MaxFileBytes = 16 << 20;
    public const int MaxTrainTimesteps = 100_000;

    public static SchedulerConfig Load(string path)
    {
        if (!File.Exists(path)) throw new InvalidFileException(path, "file not found");
        long length = new FileInfo(path).Length;
        if (length > MaxFileBytes) throw new InvalidFileException(path, $"{length} bytes is too large for a scheduler config (limit {MaxFileBytes})");
        return Parse(File.ReadAllText(path), path);
    }

    /// <summary>Parses scheduler_config.json text; <paramref name="path"/> names the source in errors.</summary>
    public static SchedulerConfig Parse(string json, string path = "scheduler_config.json")
    {
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(QuoteNonFiniteNumbers(json), new JsonDocumentOptions { MaxDepth = 8, AllowTrailingCommas = false });
        }
        catch (JsonException e) { throw new InvalidFileException(path, $"not valid JSON ({e.Message})"); }
        using var _ = doc;
        if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new InvalidFileException(path, "the top level is not a JSON object");
        var r = new Reader(doc.RootElement, path);
        var c = new SchedulerConfig
        {
            SourcePath = path,
            ClassName = r.String("_class_name"),
            NumTrainTimesteps = r.Int("num_train_timesteps", 1, MaxTrainTimesteps),
            BetaStart = r.Double("beta_start", 0, 1, exclusiveMin: true, exclusiveMax: true),
            BetaEnd = r.Double("beta_end", 0, 1, exclusiveMin: true, exclusiveMax: true),
            BetaSchedule = r.Choice("beta_schedule", "linear", "scaled_linear", "squaredcos_cap_v2"),
            TrainedBetas = r.FloatArray("trained_betas", MaxTrainTimesteps, 0, 1),
            PredictionType = r.Choice("prediction_type", "epsilon", "v_prediction", "sample"),
            TimestepSpacing = r.Choice("timestep_spacing", "leading", "linspace", "trailing"),
            StepsOffset = r.Int("steps_offset", 0, MaxTrainTimesteps),
            SetAlphaToOne = r.Bool("set_alpha_to_one"),
            SkipPrkSteps = r.Bool("skip_prk_steps"),
            ClipSample = r.Bool("clip_sample"),
            ClipSampleRange = r.Double("clip_sample_range", 0, double.MaxValue, exclusiveMin: true),
            Thresholding = r.Bool("thresholding"),
            RescaleBetasZeroSnr = r.Bool("rescale_betas_zero_snr"),
            UseKarrasSigmas = r.Bool("use_karras_sigmas"),
            InterpolationType = r.Choice("interpolation_type", "linear", "log_linear"),
            VarianceType = r.Choice("variance_type", "fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned", "learned_range"),
            SolverOrder = r.Int("solver_order", 1, 3),
            AlgorithmType = r.Choice("algorithm_type", "dpmsolver++", "dpmsolver", "sde-dpmsolver", "sde-dpmsolver++"),
            SolverType = r.Choice("solver_type", "midpoint", "heun", "logrho", "bh1", "bh2"),
            LowerOrderFinal = r.Bool("lower_order_final"),
            LambdaMinClipped = r.Double("lambda_min_clipped", double.NegativeInfinity, double.PositiveInfinity, allowInfinite: true),
            PredictX0 = r.Bool("predict_x0"),
            DisableCorrector = r.IntArray("disable_corrector", 10_000),
        };
        if (c.TrainedBetas != null && c.NumTrainTimesteps != null && c.TrainedBetas.Length != c.NumTrainTimesteps)
            throw new InvalidFileException(path, $"trained_betas has {c.TrainedBetas.Length} values but num_train_timesteps is {c.NumTrainTimesteps}");
        if (c.TrainedBetas is { Length: 0 }) throw new InvalidFileException(path, "trained_betas is empty");
        return c;
    }

    /// <summary>Python's json writes -Infinity/Infinity/NaN bare (e.g. lambda_min_clipped); JSON does not allow them.</summary>
    internal static string QuoteNonFiniteNumbers(string json)
    {
        if (!json.Contains("Infinity") && !json.Contains("NaN")) return json;
        var sb = new StringBuilder(json.Length + 16);
        bool inString = false;
        for (int i = 0; i < json.Length; i++)
        {
            char ch = json[i];
            if (inString)
            {
                sb.Append(ch);
                if (ch == '\\' && i + 1 < json.Length) sb.Append(json[++i]);
                else if (ch == '"') inString = false;
                continue;
            }
            if (ch == '"') { inString = true; sb.Append(ch); continue; }
            string? token = null;
            foreach (var t in (ReadOnlySpan<string>)["-Infinity", "Infinity", "NaN"])
                if (string.CompareOrdinal(json, i, t, 0, t.Length) == 0) { token = t; break; }
            if (token != null) { sb.Append('"').Append(token).Append('"'); i += token.Length - 1; }
            else sb.Append(ch);
        }
        return sb.ToString();
    }

    private readonly struct Reader(JsonElement root, string path)
    {
        private JsonElement? Get(string key) =>
            root.TryGetProperty(key, out var v) && v.ValueKind != JsonValueKind.Null ? v : null;

        private InvalidFileException Bad(string key, string problem) => new(path, $"{key}: {problem}");

        public string? String(string key)
        {
            if (Get(key) is not { } v) return null;
            if (v.ValueKind != JsonValueKind.String) throw Bad(key, $"expected a string, got {v.ValueKind}");
            return v.GetString();
        }

        public string? Choice(string key, params string[] allowed)
        {
            var s = String(key);
            if (s != null && Array.IndexOf(allowed, s) < 0) throw Bad(key, $"'{s}' is not one of {string.Join(", ", allowed)}");
            return s;
        }

        public bool? Bool(string key)
        {
            if (Get(key) is not { } v) return null;
            return v.ValueKind switch
            {
                JsonValueKind.True => true,
                JsonValueKind.False => false,
                _ => throw Bad(key, $"expected true or false, got {v.ValueKind}"),
            };
        }

        private double Number(string key, JsonElement v, bool allowInfinite)
        {
            if (v.ValueKind == JsonValueKind.Number) return v.GetDouble();
            if (allowInfinite && v.ValueKind == JsonValueKind.String)
            {
                var s = v.GetString();
                if (s == "-Infinity") return double.NegativeInfinity;
                if (s == "Infinity") return double.PositiveInfinity;
            }
            throw Bad(key, $"expected a number, got {(v.ValueKind == JsonValueKind.String ? v.GetString() : v.ValueKind.ToString())}");
        }

        public double? Double(string key, double min, double max, bool exclusiveMin = false, bool exclusiveMax = false, bool allowInfinite = false)
        {
            if (Get(key) is not { } v) return null;
            double d = Number(key, v, allowInfinite);
            bool below = exclusiveMin ? d <= min : d < min;
            bool above = exclusiveMax ? d >= max : d > max;
            if (double.IsNaN(d) || below || above || (!allowInfinite && double.IsInfinity(d)))
                throw Bad(key, $"{d.ToString(CultureInfo.InvariantCulture)} is out of range {(exclusiveMin ? "(" : "[")}{min.ToString(CultureInfo.InvariantCulture)}, {max.ToString(CultureInfo.InvariantCulture)}{(exclusiveMax ? ")" : "]")}");
            return d;
        }

        public int? Int(string key, int min, int max)
        {
            if (Get(key) is not { } v) return null;
            double d = Number(key, v, false);
            if (d != Math.Floor(d)) throw Bad(key, $"{d.ToString(CultureInfo.InvariantCulture)} is not an integer");
            if (d < min || d > max) throw Bad(key, $"{d.ToString(CultureInfo.InvariantCulture)} is out of range [{min}, {max}]");
            return (int)d;
        }

        public float[]? FloatArray(string key, int maxLength, double min, double max)
        {
            if (Get(key) is not { } v) return null;
            if (v.ValueKind != JsonValueKind.Array) throw Bad(key, $"expected an array of numbers, got {v.ValueKind}");
            int n = v.GetArrayLength();
            if (n > maxLength) throw Bad(key, $"{n} values is more than the limit of {maxLength}");
            var r = new float[n];
            int i = 0;
            foreach (var e in v.EnumerateArray())
            {
                if (e.ValueKind != JsonValueKind.Number) throw Bad(key, $"element {i} is not a number");
                double d = e.GetDouble();
                if (!(d > min && d < max)) throw Bad(key, $"element {i} = {d.ToString(CultureInfo.InvariantCulture)} is outside ({min}, {max})");
                r[i++] = (float)d;
            }
            return r;
        }

        public int[]? IntArray(string key, int maxLength)
        {
            if (Get(key) is not { } v) return null;
            if (v.ValueKind != JsonValueKind.Array) throw Bad(key, $"expected an array of integers, got {v.ValueKind}");
            if (v.GetArrayLength() > maxLength) throw Bad(key, "too many values");
            var r = new List<int>();
            foreach (var e in v.EnumerateArray())
            {
                if (e.ValueKind != JsonValueKind.Number || !e.TryGetInt32(out var x)) throw Bad(key, "elements must be integers");
                r.Add(x);
            }
            return r.ToArray();
        }
    }
}
