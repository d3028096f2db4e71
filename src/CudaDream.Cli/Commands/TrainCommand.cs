using CommandLine;
using CudaDream.Diffusion.Training;
using Spectre.Console;

namespace CudaDream.Cli.Commands;

/// <summary>
/// <c>cudadream train --config run.json [--setting value ...]</c>. The settings are the properties of
/// <see cref="DreamBoothOptions"/> (JSON snake_case, flags kebab-case), so this verb parses its own
/// arguments instead of declaring sixty options: see <see cref="DreamBoothConfig.Help"/>.
/// </summary>
[Verb("train", HelpText = "DreamBooth training: concepts, class images, caching, the loop, sample grids, checkpoints, LoRA. `cudadream train --help` lists every setting.")]
public sealed class TrainCommand : ICommand
{
    public IReadOnlyList<string> Arguments { get; init; } = Array.Empty<string>();

    public int Run()
    {
        if (Arguments.Contains("--help") || Arguments.Contains("-h"))
        {
            Console.WriteLine(DreamBoothConfig.Help());
            return 0;
        }
        string? config = null;
        var flags = new List<string>();
        for (int i = 0; i < Arguments.Count; i++)
        {
            if (Arguments[i] == "--config")
            {
                if (i + 1 >= Arguments.Count) throw new ConfigException(new[] { "--config needs a file" });
                config = Arguments[++i];
            }
            else flags.Add(Arguments[i]);
        }
        var loaded = DreamBoothConfig.Load(config, flags);
        using var interrupt = new CliInterrupt("stopping after this step (writing a checkpoint; Ctrl-C again to abort)...");
        var trainer = new DreamBoothTrainer(loaded.Options, loaded.Notices);
        var result = Console.IsOutputRedirected ? trainer.Run(new LineProgress(), interrupt.Token) : RunWithBars(trainer, interrupt.Token);
        if (!result.Completed) return 130;
        Console.WriteLine($"done: {result.Updates} updates; {string.Join(", ", new[] { result.LoraPath, result.WeightsPath }.OfType<string>())}; samples and loss curve in {result.OutputDir}");
        return 0;
    }

    private static TrainingResult RunWithBars(DreamBoothTrainer trainer, CancellationToken ct)
    {
        TrainingResult? result = null;
        AnsiConsole.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn(), new SpinnerColumn())
            .Start(ctx =>
            {
                var tasks = new Dictionary<string, ProgressTask>();
                result = trainer.Run(new SyncProgress(p =>
                {
                    if (p.Message != null) { AnsiConsole.MarkupLine(Markup.Escape(p.Message)); return; }
                    if (!tasks.TryGetValue(p.Phase, out var task)) tasks[p.Phase] = task = ctx.AddTask(Markup.Escape(p.Phase), maxValue: Math.Max(1, p.Total));
                    task.MaxValue = Math.Max(1, p.Total);
                    task.Value = p.Step;
                    if (p.Phase == "training")
                        task.Description = Markup.Escape($"step {p.Step}/{p.Total} loss {p.SmoothedLoss:F4} lr {p.LearningRate:0.##e+0} {p.StepsPerSecond:F2} it/s" + (p.EvalLoss is double e ? $" eval {e:F4}" : "") + (p.ValidationLoss is double v ? $" val {v:F4}" : ""));
                }), ct);
            });
        return result!;
    }

    /// <summary>Progress as plain lines (output redirected: logs, CI).</summary>
    private sealed class LineProgress : IProgress<TrainingProgress>
    {
        private DateTime _last;

        public void Report(TrainingProgress p)
        {
            if (p.Message != null) { Console.WriteLine(p.Message); return; }
            bool end = p.Step == p.Total;
            if (!end && p.EvalLoss == null && p.ValidationLoss == null && DateTime.UtcNow - _last < TimeSpan.FromSeconds(2)) return;
            _last = DateTime.UtcNow;
            if (p.Phase == "training")
                Console.WriteLine($"step {p.Step}/{p.Total} loss {p.Loss:F5} (smoothed {p.SmoothedLoss:F5}) lr {p.LearningRate:0.###e+0} {p.StepsPerSecond:F2} it/s ETA {p.Eta:hh\\:mm\\:ss}" +
                    (p.EvalLoss is double e ? $" eval {e:F5}" : "") + (p.ValidationLoss is double v ? $" val {v:F5}" : ""));
            else Console.WriteLine($"{p.Phase}: {p.Step}/{p.Total}");
        }
    }

    /// <summary>Runs the callback on the reporting thread (Progress&lt;T&gt; would post it to the thread pool, out of order).</summary>
    private sealed class SyncProgress(Action<TrainingProgress> report) : IProgress<TrainingProgress>
    {
        public void Report(TrainingProgress value) => report(value);
    }
}
