using CudaDream.Engine.Backends.Cpu;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Tensors;

namespace CudaDream.Engine.Training;

/// <summary>
/// A planned training step on the CPU backend: one arena for activations, saved tensors and gradients.
/// Parameters are updated in place between steps (their buffers are the graph's constants), so a step
/// always sees the current values.
/// </summary>
public sealed class TrainingSession : IDisposable
{
    private readonly CpuExecutor _executor;
    public TrainingGraph Training { get; }
    public ExecutionPlan Plan { get; }

    public TrainingSession(TrainingGraph training, CpuContext? context = null)
    {
        Training = training;
        Plan = ExecutionPlan.Create(training.Graph);
        _executor = new CpuExecutor(Plan, context);
    }

    /// <summary>Runs forward, loss and backward. <paramref name="step"/> keys in-graph randomness (dropout).</summary>
    public StepResult Run(IReadOnlyDictionary<string, Tensor> inputs, ulong seed = 0, long step = 0)
    {
        _executor.Context = new CpuContext { Seed = seed, Step = step, UseFastKernels = _executor.Context.UseFastKernels };
        var fetched = _executor.Run(inputs, new[] { Training.Loss, Training.Prediction });
        return new StepResult(fetched[Training.Loss.Name].ToFloat64Array()[0], fetched[Training.Prediction.Name]);
    }

    /// <summary>The gradient of a parameter after <see cref="Run"/>: a view into the arena, valid until the next run.</summary>
    public Tensor Gradient(TrainableParameter p) => _executor.Bind(p.Gradient);

    public Tensor InputGradient(string input) => _executor.Bind(Training.InputGradients[input]);

    public void Dispose()
    {
        _executor.Dispose();
        foreach (var o in Training.Graph.Owners) o.Dispose();
    }
}

public sealed record StepResult(double Loss, Tensor Prediction);
