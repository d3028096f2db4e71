namespace CudaDream.Engine.Formats;

/// <summary>
/// Writes files so that a reader (or a crash) never sees a half-written result: the content goes to
/// a temporary file in the same folder, is flushed to disk, and is then renamed over the target.
/// </summary>
public static class AtomicFile
{
    /// <summary>Writes <paramref name="path"/>; a path that names a folder, or lies under a file, is a user error (one line), checked before <paramref name="write"/> runs.</summary>
    public static void Write(string path, Action<Stream> write)
    {
        var full = Path.GetFullPath(path);
        if (Directory.Exists(full) || Path.EndsInDirectorySeparator(path)) throw new CudaDreamException($"{path}: is a folder; give a file name");
        var dir = Path.GetDirectoryName(full)!;
        for (var up = dir; up != null; up = Path.GetDirectoryName(up))
            if (File.Exists(up)) throw new CudaDreamException($"{path}: cannot create a file under {up}, which is a file");
        Directory.CreateDirectory(dir);
        var tmp = Path.Combine(dir, $".{Path.GetFileName(full)}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var fs = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
            {
                write(fs);
                fs.Flush(flushToDisk: true);
            }
            File.Move(tmp, full, overwrite: true);
        }
        catch
        {
            try { File.Delete(tmp); } catch { /* best effort: the temp file is hidden and named as such */ }
            throw;
        }
    }

    public static void WriteAllBytes(string path, ReadOnlySpan<byte> bytes)
    {
        var copy = bytes.ToArray();
        Write(path, s => s.Write(copy));
    }

    public static void WriteAllText(string path, string text) =>
        WriteAllBytes(path, System.Text.Encoding.UTF8.GetBytes(text));
}
