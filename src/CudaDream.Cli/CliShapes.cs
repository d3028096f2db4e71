using CudaDream.Engine;

namespace CudaDream.Cli;

/// <summary>Parsing helpers shared by verbs.</summary>
internal static class CliParse
{
    /// <summary>"name=d0,d1,..." → (name, dims).</summary>
    public static Dictionary<string, int[]> Shapes(IEnumerable<string> specs)
    {
        var result = new Dictionary<string, int[]>(StringComparer.Ordinal);
        foreach (var spec in specs)
        {
            int eq = spec.IndexOf('=');
            if (eq <= 0) throw new CudaDreamException($"--shape '{spec}': expected name=d0,d1,...");
            var dims = spec[(eq + 1)..].Split(',', StringSplitOptions.RemoveEmptyEntries);
            var parsed = new int[dims.Length];
            for (int i = 0; i < dims.Length; i++)
                if (!int.TryParse(dims[i], out parsed[i]) || parsed[i] < 0) throw new CudaDreamException($"--shape '{spec}': '{dims[i]}' is not a dimension");
            result[spec[..eq]] = parsed;
        }
        return result;
    }

    /// <summary>"v1,alias=v2" → (output name, value name) pairs.</summary>
    public static List<(string alias, string value)> Aliases(string? spec)
    {
        var result = new List<(string, string)>();
        if (string.IsNullOrWhiteSpace(spec)) return result;
        foreach (var part in spec.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            int eq = part.IndexOf('=');
            result.Add(eq > 0 ? (part[..eq], part[(eq + 1)..]) : (part, part));
        }
        return result;
    }

    public static string FormatBytes(long bytes) => bytes switch
    {
        >= 1L << 30 => $"{bytes / (double)(1L << 30):F2} GiB",
        >= 1L << 20 => $"{bytes / (double)(1L << 20):F1} MiB",
        >= 1L << 10 => $"{bytes / 1024.0:F1} KiB",
        _ => $"{bytes} B",
    };
}
