namespace CudaDream.Engine.Formats;

/// <summary>
/// Path comparisons for "would this write land on an input?" checks: paths are made absolute and their existing
/// part resolved through symbolic links, component by component, so two spellings of one folder or file compare
/// equal. (Hard links need no check: every write is temp + rename, which leaves the other link's content alone.)
/// </summary>
public static class FilePaths
{
    private static readonly StringComparison Comparison = OperatingSystem.IsWindows() || OperatingSystem.IsMacOS() ? StringComparison.OrdinalIgnoreCase : StringComparison.Ordinal;

    /// <summary>The absolute path with the links of every existing component resolved (a missing tail kept as written).</summary>
    public static string Canonical(string path)
    {
        var full = Path.TrimEndingDirectorySeparator(Path.GetFullPath(path));
        var root = Path.GetPathRoot(full) ?? "/";
        var resolved = root;
        bool exists = true;
        foreach (var part in full[root.Length..].Split(Path.DirectorySeparatorChar, StringSplitOptions.RemoveEmptyEntries))
        {
            resolved = Path.Combine(resolved, part);
            if (!exists) continue;
            try
            {
                FileSystemInfo step = Directory.Exists(resolved) ? new DirectoryInfo(resolved) : new FileInfo(resolved);
                if (!step.Exists && step.LinkTarget == null) { exists = false; continue; }
                if (step.LinkTarget != null && step.ResolveLinkTarget(returnFinalTarget: true) is { } target)
                    resolved = Path.TrimEndingDirectorySeparator(target.FullName);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { exists = false; }
        }
        return resolved;
    }

    /// <summary>Whether <paramref name="path"/> is <paramref name="folder"/> itself or lies anywhere inside it.</summary>
    public static bool IsSameOrInside(string path, string folder)
    {
        var p = Canonical(path);
        var f = Canonical(folder);
        return string.Equals(p, f, Comparison) || p.StartsWith(Path.EndsInDirectorySeparator(f) ? f : f + Path.DirectorySeparatorChar, Comparison);
    }

    /// <summary>Whether two paths name the same file or folder.</summary>
    public static bool Same(string a, string b) => string.Equals(Canonical(a), Canonical(b), Comparison);
}
