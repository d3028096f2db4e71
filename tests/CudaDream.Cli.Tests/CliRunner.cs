using Xunit;

namespace CudaDream.Cli.Tests;

/// <summary>Runs the CLI in-process with Console redirected. Tests that use it share one collection so redirections never overlap.</summary>
public static class CliRunner
{
    private static readonly object Gate = new();

    public static (int code, string stdout, string stderr) Run(params string[] args)
    {
        lock (Gate)
        {
            var oldOut = Console.Out;
            var oldErr = Console.Error;
            var o = new StringWriter();
            var e = new StringWriter();
            Console.SetOut(o);
            Console.SetError(e);
            try { return (Program.Run(args), o.ToString(), e.ToString()); }
            finally
            {
                Console.SetOut(oldOut);
                Console.SetError(oldErr);
            }
        }
    }
}

[CollectionDefinition("Console", DisableParallelization = true)]
public sealed class ConsoleCollection { }
