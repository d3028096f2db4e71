using System.Reflection;
using CommandLine;
using CudaDream.Engine;

namespace CudaDream.Cli;

/// <summary>
/// A CLI verb: a CommandLineParser options class ([Verb]) that runs itself.
/// Each verb lives in its own file under Commands/ and is found by reflection, so adding a verb
/// touches nothing else. Two-word verbs ("graph run") are spelled with a space in [Verb].
/// </summary>
public interface ICommand
{
    /// <summary>Runs the verb; returns the process exit code.</summary>
    int Run();
}

public static class Program
{
    /// <summary>First words that take a second word to form the verb (`graph run`, `kernels build`).</summary>
    private static readonly HashSet<string> VerbGroups = new() { "graph", "kernels" };

    public static int Main(string[] args)
    {
        Console.OutputEncoding = System.Text.Encoding.UTF8;
        return Run(args);
    }

    /// <summary>Entry point for tests and for embedding: parses, runs, maps errors to exit codes.</summary>
    public static int Run(string[] args)
    {
        // `train` takes every DreamBoothOptions setting as a flag; it parses its own arguments.
        if (args.Length >= 1 && args[0] == "train")
            return Execute(new Commands.TrainCommand { Arguments = args[1..] });

        if (args.Length >= 2 && VerbGroups.Contains(args[0]) && !args[1].StartsWith('-'))
            args = [args[0] + " " + args[1], .. args[2..]];

        var verbs = typeof(Program).Assembly.GetTypes()
            .Where(t => t.GetCustomAttribute<VerbAttribute>() != null && typeof(ICommand).IsAssignableFrom(t))
            .OrderBy(t => t.GetCustomAttribute<VerbAttribute>()!.Name, StringComparer.Ordinal)
            .ToArray();

        using var parser = new Parser(s =>
        {
            s.HelpWriter = Console.Out;
            s.CaseSensitive = true;
            s.CaseInsensitiveEnumValues = true;
            s.AutoVersion = true;
            s.AllowMultiInstance = true;
        });
        var parsed = parser.ParseArguments(args, verbs);
        if (parsed is NotParsed<object> np)
        {
            bool helpAsked = np.Errors.Any(e => e.Tag is ErrorType.HelpRequestedError or ErrorType.HelpVerbRequestedError or ErrorType.VersionRequestedError);
            return helpAsked ? 0 : 2;
        }
        return Execute((ICommand)((Parsed<object>)parsed).Value);
    }

    /// <summary>The one error funnel: user errors are one line and exit 1; anything else is an internal error.</summary>
    private static int Execute(ICommand command)
    {
        try
        {
            return command.Run();
        }
        catch (CudaDreamException e)
        {
            // One line per problem (a configuration can have several).
            foreach (var line in e.Message.Split('\n', StringSplitOptions.RemoveEmptyEntries)) Console.Error.WriteLine($"error: {line.TrimEnd('\r')}");
            return 1;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // The file system refused (full, read-only, vanished, no permission): the user's to fix, said in one line.
            Console.Error.WriteLine($"error: {Engine.Formats.WriteFailedException.Reason(e)}{(e is IOException { HResult: 28 or 30 } or UnauthorizedAccessException ? $" ({e.Message})" : "")}");
            return 1;
        }
        catch (OperationCanceledException)
        {
            Console.Error.WriteLine("cancelled");
            return 130;
        }
        catch (Exception e) when (Environment.GetEnvironmentVariable("CUDADREAM_DEBUG") != "1")
        {
            Console.Error.WriteLine($"error: internal error ({e.GetType().Name}): {e.Message.Split('\n')[0]} (set CUDADREAM_DEBUG=1 for the stack trace)");
            return 3;
        }
    }
}
