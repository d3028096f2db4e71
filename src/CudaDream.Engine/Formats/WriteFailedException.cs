namespace CudaDream.Engine.Formats;

/// <summary>
/// A file could not be written for a reason outside the program — a full disk, a read-only or vanished folder,
/// missing permission — reported as one line naming the file and the reason (a user error, not an internal one).
/// </summary>
public sealed class WriteFailedException : CudaDreamException
{
    public string Path { get; }

    public WriteFailedException(string path, Exception cause) : base($"{path}: cannot write: {Reason(cause)}", cause) { Path = path; }

    /// <summary>The failures the file system hands a writer (not program errors).</summary>
    public static bool IsFileSystemFailure(Exception e) => e is IOException or UnauthorizedAccessException;

    /// <summary>The reason in words: errno 28 (ENOSPC), 30 (EROFS) and 122 (EDQUOT) are what .NET passes as the HResult on Unix.</summary>
    public static string Reason(Exception e) => e switch
    {
        UnauthorizedAccessException => "permission denied (the folder or file is not writable)",
        DirectoryNotFoundException => "its folder does not exist (deleted during the run?)",
        IOException { HResult: 28 } or IOException { HResult: unchecked((int)0x80070070) } => "no space left on the device",
        IOException { HResult: 30 } => "the file system is read-only",
        IOException { HResult: 122 } => "disk quota exceeded",
        _ => e.Message,
    };
}
