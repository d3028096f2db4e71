namespace CudaDream.Engine;

/// <summary>
/// An error the user can act on: bad input, a missing file, an unsupported model.
/// The CLI prints <see cref="Exception.Message"/> as one line and exits non-zero, so the message
/// names the file (or node, key, option) and the problem.
/// </summary>
public class CudaDreamException : Exception
{
    public CudaDreamException(string message) : base(message) { }
    public CudaDreamException(string message, Exception inner) : base(message, inner) { }
}

/// <summary>A file that is malformed, truncated or hostile. The message starts with the file's path.</summary>
public sealed class InvalidFileException : CudaDreamException
{
    public string Path { get; }
    public InvalidFileException(string path, string problem) : base($"{path}: {problem}") { Path = path; }
}
