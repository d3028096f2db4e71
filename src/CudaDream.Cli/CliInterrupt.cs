using System.Runtime.InteropServices;

namespace CudaDream.Cli;

/// <summary>
/// Ctrl-C (SIGINT) and SIGTERM as a request to stop: the first one cancels <see cref="Token"/> (the verb finishes its
/// current step, keeps what can be kept and exits 130), a second one of either ends the process at once. SIGTERM
/// is what `kill`, systemd and container runtimes send, so it must keep work exactly as Ctrl-C does.
/// </summary>
public sealed class CliInterrupt : IDisposable
{
    private readonly CancellationTokenSource _cts = new();
    private readonly string _message;
    private readonly PosixSignalRegistration? _term;

    public CancellationToken Token => _cts.Token;

    /// <param name="message">What the first signal prints (what will happen now).</param>
    public CliInterrupt(string message)
    {
        _message = message;
        Console.CancelKeyPress += OnCancelKey;
        if (!OperatingSystem.IsWindows()) _term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnTerm);
    }

    private void OnCancelKey(object? sender, ConsoleCancelEventArgs e) => e.Cancel = FirstRequest();

    private void OnTerm(PosixSignalContext context) => context.Cancel = FirstRequest();

    /// <summary>True (keep running) the first time; false (let the runtime end the process) after that.</summary>
    private bool FirstRequest()
    {
        if (_cts.IsCancellationRequested) return false;
        Console.Error.WriteLine(_message);
        _cts.Cancel();
        return true;
    }

    public void Dispose()
    {
        Console.CancelKeyPress -= OnCancelKey;
        _term?.Dispose();
        _cts.Dispose();
    }
}
