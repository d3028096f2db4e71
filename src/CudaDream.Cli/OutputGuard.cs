using CudaDream.Engine;
using CudaDream.Engine.Formats;

namespace CudaDream.Cli;

/// <summary>
/// The CLI's rule for output files: an output that is one of the command's own inputs is always refused (it would
/// be read and replaced in one run), and an existing output is replaced only with --force. Checked before any work,
/// so a refused command costs nothing.
/// </summary>
public static class OutputGuard
{
    /// <param name="option">The output's flag, for the message (e.g. "--out").</param>
    /// <param name="inputs">The command's inputs: (flag, path) pairs; a folder input also covers the files inside it.</param>
    public static void Check(string option, string output, bool force, params (string Option, string? Path)[] inputs)
    {
        // An existing folder is the writers' to refuse: "is a folder" for file outputs, "not empty" for ONNX folders.
        if (Directory.Exists(output)) return;
        foreach (var (inputOption, input) in inputs)
        {
            if (string.IsNullOrEmpty(input)) continue;
            bool clash = Directory.Exists(input) ? FilePaths.IsSameOrInside(output, input) || FilePaths.IsSameOrInside(input, output) : FilePaths.Same(output, input);
            if (clash) throw new CudaDreamException($"{option} {output}: would overwrite the input {inputOption} {input}; write the result elsewhere");
        }
        if (File.Exists(output) && !force) throw new CudaDreamException($"{option} {output}: exists; pass --force to replace it, or choose another name");
    }
}
