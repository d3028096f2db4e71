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
        try { Directory.CreateDirectory(dir); }
        catch (Exception e) when (WriteFailedException.IsFileSystemFailure(e)) { throw new WriteFailedException(path, e); }
        var tmp = Path.Combine(dir, $".{Path.GetFileName(full)}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        try
        {
            FaultInjection.BeforeWrite(full);
            using (var fs = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
            {
                write(FaultInjection.Enabled ? new KillSiteStream(fs) : fs);
                fs.Flush(flushToDisk: true);
            }
            FaultInjection.At("write-before-rename");
            File.Move(tmp, full, overwrite: true);
        }
        catch (Exception e)
        {
            try { File.Delete(tmp); } catch { /* best effort: the temp file is hidden and named as such */ }
            if (WriteFailedException.IsFileSystemFailure(e)) throw new WriteFailedException(path, e);
            throw;
        }
    }

    /// <summary>Appends to a file (a log whose readers skip a torn last line), with the same error mapping as <see cref="Write"/>.</summary>
    public static void AppendAllText(string path, string text)
    {
        try
        {
            FaultInjection.BeforeWrite(Path.GetFullPath(path));
            File.AppendAllText(path, text);
        }
        catch (Exception e) when (WriteFailedException.IsFileSystemFailure(e)) { throw new WriteFailedException(path, e); }
    }

    /// <summary>Passes writes through; after the first one reaches the OS, the "write-mid" kill site (a kill with half a file written).</summary>
    private sealed class KillSiteStream(FileStream inner) : Stream
    {
        private bool _first = true;
        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => inner.Length;
        public override long Position { get => inner.Position; set => throw new NotSupportedException(); }
        public override void Flush() => inner.Flush();
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

        public override void Write(ReadOnlySpan<byte> buffer)
        {
            inner.Write(buffer);
            if (!_first) return;
            _first = false;
            inner.Flush();
            FaultInjection.At("write-mid");
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
