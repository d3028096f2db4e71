using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;

namespace CudaDream.Cli.Tests;

/// <summary>
/// A real `cudadream` child process (the CLI built beside the tests), its output collected line by line, so tests can
/// wait for a phase, send it a signal (SIGINT, SIGTERM, SIGKILL) and read its exit code and output.
/// </summary>
public sealed partial class ChildCli : IDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _out = new();
    private readonly StringBuilder _err = new();
    private readonly object _gate = new();

    public const int SigInt = 2, SigKill = 9, SigTerm = 15;

    /// <summary>
    /// True when this process ignores SIGINT (Linux: bit 2 of SigIgn in /proc/self/status), as it does when the test run
    /// was started as a background job without job control: its children inherit the ignored disposition.
    /// </summary>
    public static bool InheritsIgnoredSigInt
    {
        get
        {
            if (!OperatingSystem.IsLinux()) return false;
            var line = File.ReadLines("/proc/self/status").FirstOrDefault(l => l.StartsWith("SigIgn:", StringComparison.Ordinal));
            return line != null && (Convert.ToUInt64(line["SigIgn:".Length..].Trim(), 16) & (1UL << (SigInt - 1))) != 0;
        }
    }

    public ChildCli(IEnumerable<string> args, IReadOnlyDictionary<string, string>? environment = null)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true, UseShellExecute = false };
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "cudadream.dll"));
        foreach (var a in args) psi.ArgumentList.Add(a);
        foreach (var (k, v) in environment ?? new Dictionary<string, string>()) psi.Environment[k] = v;
        _process = new Process { StartInfo = psi };
        _process.OutputDataReceived += (_, e) => { if (e.Data != null) lock (_gate) _out.AppendLine(e.Data); };
        _process.ErrorDataReceived += (_, e) => { if (e.Data != null) lock (_gate) _err.AppendLine(e.Data); };
        _process.Start();
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
    }

    public int Id => _process.Id;
    public bool HasExited => _process.HasExited;
    public string Stdout { get { lock (_gate) return _out.ToString(); } }
    public string Stderr { get { lock (_gate) return _err.ToString(); } }

    /// <summary>Waits until <paramref name="condition"/> holds (true) or the process ends or the time runs out (false).</summary>
    public bool WaitUntil(Func<bool> condition, TimeSpan timeout, int pollMilliseconds = 10)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (DateTime.UtcNow < deadline)
        {
            if (condition()) return true;
            if (_process.HasExited) return condition();
            Thread.Sleep(pollMilliseconds);
        }
        return false;
    }

    public void Signal(int signal)
    {
        if (kill(_process.Id, signal) != 0 && !_process.HasExited) throw new InvalidOperationException($"kill({_process.Id}, {signal}) failed: errno {Marshal.GetLastPInvokeError()}");
    }

    /// <summary>The exit code; the process is killed (and the test fails by timeout) if it runs past <paramref name="timeout"/>.</summary>
    public int WaitForExit(TimeSpan timeout)
    {
        if (!_process.WaitForExit(timeout))
        {
            _process.Kill(entireProcessTree: true);
            throw new TimeoutException($"cudadream did not end within {timeout}; stdout:\n{Stdout}\nstderr:\n{Stderr}");
        }
        _process.WaitForExit(); // drains the asynchronous output readers
        return _process.ExitCode;
    }

    public static (int Code, string Out, string Err) Run(IEnumerable<string> args, TimeSpan timeout, IReadOnlyDictionary<string, string>? environment = null)
    {
        using var child = new ChildCli(args, environment);
        int code = child.WaitForExit(timeout);
        return (code, child.Stdout, child.Stderr);
    }

    public void Dispose()
    {
        try { if (!_process.HasExited) _process.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
        _process.Dispose();
    }

    [LibraryImport("libc", SetLastError = true)]
    private static partial int kill(int pid, int sig);
}
