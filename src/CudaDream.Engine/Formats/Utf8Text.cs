namespace CudaDream.Engine.Formats;

/// <summary>
/// JSON files must be UTF-8: System.Text.Json parses a document with invalid UTF-8 inside a string and only fails
/// (InvalidOperationException, an internal error) when the string is read. Found by fuzzing; every JSON reader checks first.
/// </summary>
public static class Utf8Text
{
    /// <summary><paramref name="bytes"/> unchanged when they are valid UTF-8; else an error naming the file and the first bad byte.</summary>
    public static byte[] Require(string path, byte[] bytes, string what = "file")
    {
        Require(path, (ReadOnlySpan<byte>)bytes, what);
        return bytes;
    }

    public static void Require(string path, ReadOnlySpan<byte> bytes, string what = "file")
    {
        if (System.Text.Unicode.Utf8.IsValid(bytes)) return;
        string where = "";
        try { new System.Text.UTF8Encoding(false, throwOnInvalidBytes: true).GetCharCount(bytes); }
        catch (System.Text.DecoderFallbackException e) { where = $" (bad byte near offset {e.Index})"; }
        throw new InvalidFileException(path, $"{what} is not valid UTF-8 text{where}");
    }
}
