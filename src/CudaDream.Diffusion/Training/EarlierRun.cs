namespace CudaDream.Diffusion.Training;

/// <summary>
/// What an earlier run left in an output_dir: its result files, checkpoints and sample grids. A new run must not
/// replace them silently (nor mix its checkpoints with theirs: the newest by name would win on --resume), so the
/// trainer refuses such a folder unless told to resume or overwrite.
/// </summary>
public static class EarlierRun
{
    /// <summary>The earlier run's files and folders (relative names), empty when output_dir holds none.</summary>
    public static List<string> Find(DreamBoothOptions o)
    {
        var found = new List<string>();
        if (!Directory.Exists(o.OutputDir)) return found;
        foreach (var f in ResultFiles(o)) found.Add(Path.GetFileName(f));
        var checkpoints = Path.Combine(o.OutputDir, "checkpoints");
        if (Directory.Exists(checkpoints))
            found.AddRange(Directory.EnumerateDirectories(checkpoints, "step-*").Order(StringComparer.Ordinal).Select(d => "checkpoints/" + Path.GetFileName(d)));
        if (File.Exists(Path.Combine(o.OutputDir, "loss.csv")) && found.Count == 0) found.Add("loss.csv");
        return found;
    }

    /// <summary>Deletes the earlier run's checkpoints, sample grids and result files; caches and class images stay (content-keyed, reusable).</summary>
    public static void Delete(DreamBoothOptions o, Action<string> say)
    {
        var removed = Find(o);
        foreach (var f in ResultFiles(o)) File.Delete(f);
        foreach (var sub in new[] { "checkpoints", "samples" })
        {
            var dir = Path.Combine(o.OutputDir, sub);
            if (!Directory.Exists(dir)) continue;
            // Renamed first, so a kill during the delete never leaves a half-deleted checkpoint under its real name.
            var doomed = Path.Combine(o.OutputDir, $".{sub}.{Environment.ProcessId}.deleting");
            Directory.Move(dir, doomed);
            Directory.Delete(doomed, recursive: true);
        }
        foreach (var stale in Directory.EnumerateDirectories(o.OutputDir, ".*.deleting")) Directory.Delete(stale, recursive: true);
        if (removed.Count > 0) say($"overwrite: deleted the earlier run's {string.Join(", ", removed.Take(5))}{(removed.Count > 5 ? ", …" : "")}");
    }

    private static IEnumerable<string> ResultFiles(DreamBoothOptions o) =>
        Directory.EnumerateFiles(o.OutputDir, o.Name + "*.safetensors")
            .Where(f => Path.GetFileName(f) is var n && (n == o.Name + ".safetensors" || n == o.Name + ".weights.safetensors" || n.StartsWith(o.Name + "-step", StringComparison.Ordinal)
                || n.StartsWith(o.Name + "-raw.", StringComparison.Ordinal)));
}
