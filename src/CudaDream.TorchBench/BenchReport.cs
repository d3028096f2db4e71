using System.Globalization;
using System.Text.Json;
using CudaDream.Engine.Formats;

namespace CudaDream.TorchBench;

/// <summary>
/// What one run measured, written as the JSON that <c>cudadream bench --compare</c> reads (keep the names stable):
/// <code>
/// {"library": "libtorch 2.10.0 (TorchSharp 0.107.0)", "threads": T,
///  "verified": {"reference": path-or-null, "max_abs_error": x, "max_abs_reference": y, "passed": true},
///  "results": [{"name": "unet forward", "median_seconds": s, "gflop_per_s": null}, {"name": "lora train step", "median_seconds": s}],
///  "peak_rss_bytes": n, "model": DIR, "batch": B, "size": PX, "repeats": R}
/// </code>
/// Without a reference (neither <c>--verify</c> nor the folder's <c>refs/unet.safetensors</c>) the four "verified"
/// fields are null: nothing was checked. A failed check writes no report (the program refuses to time).
/// </summary>
public sealed record BenchReport(string Library, int Threads, ReferenceComparison? Verified, IReadOnlyList<TimedResult> Results, long PeakRssBytes,
    string Model, int Batch, int Size, int Repeats)
{
    public void WriteJson(string path) => AtomicFile.Write(path, stream =>
    {
        using var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true });
        w.WriteStartObject();
        w.WriteString("library", Library);
        w.WriteNumber("threads", Threads);
        w.WriteStartObject("verified");
        if (Verified is { } v)
        {
            w.WriteString("reference", v.Reference);
            w.WriteNumber("max_abs_error", v.MaxAbsError);
            w.WriteNumber("max_abs_reference", v.MaxAbsReference);
            w.WriteBoolean("passed", v.Passed);
        }
        else
        {
            foreach (var key in new[] { "reference", "max_abs_error", "max_abs_reference", "passed" }) w.WriteNull(key);
        }
        w.WriteEndObject();
        w.WriteStartArray("results");
        foreach (var r in Results)
        {
            w.WriteStartObject();
            w.WriteString("name", r.Name);
            w.WriteNumber("median_seconds", r.MedianSeconds);
            // CudaDream's rate is the graph's own multiply-add count over time; this program counts no FLOPs.
            if (r.Name == TorchBenchmark.ForwardName) w.WriteNull("gflop_per_s");
            w.WriteEndObject();
        }
        w.WriteEndArray();
        w.WriteNumber("peak_rss_bytes", PeakRssBytes);
        w.WriteString("model", Model);
        w.WriteNumber("batch", Batch);
        w.WriteNumber("size", Size);
        w.WriteNumber("repeats", Repeats);
        w.WriteEndObject();
    });

    /// <summary>The short table printed to stdout.</summary>
    public string Table()
    {
        var inv = CultureInfo.InvariantCulture;
        var lines = new List<string>
        {
            $"{Library}, {Threads} thread(s); model {Model}, batch {Batch}, {Size}x{Size} ({Size / 8}x{Size / 8} latents), median of {Repeats}",
            Verified is { } v
                ? string.Format(inv, "verified against {0}: max|out - ref| {1:0.00E+0} = {2:0.00E+0} of max|ref| {3:G4} (allowed {4:0E+0})",
                    v.Reference, v.MaxAbsError, v.RelativeError, v.MaxAbsReference, v.RelativeTolerance)
                : "not verified: no reference (give --verify REF.safetensors)",
        };
        foreach (var r in Results) lines.Add(string.Format(inv, "{0,-18} {1,10:F1} ms", r.Name, r.MedianSeconds * 1000));
        lines.Add(string.Format(inv, "{0,-18} {1,10:F1} MiB", "peak RSS", PeakRssBytes / (1024.0 * 1024)));
        return string.Join(Environment.NewLine, lines);
    }
}
