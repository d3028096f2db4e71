using CudaDream.Engine;
using CudaDream.Engine.Backends;
using CudaDream.Engine.Backends.Cpu;
using CudaDream.Engine.Backends.Device;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Tensors;

namespace CudaDream.Engine.Training;

/// <summary>
/// A planned training step on a backend: one arena for activations, saved tensors and gradients.
/// Parameters are updated in place between steps (their buffers are the graph's constants); on the CPU a
/// step always sees the current values, on a kernel device <see cref="ParametersUpdated"/> uploads them.
/// </summary>
public sealed class TrainingSession : IDisposable
{
    private readonly IPlanExecutor _executor;
    public TrainingGraph Training { get; }
    public ExecutionPlan Plan { get; }

    public TrainingSession(TrainingGraph training, CpuContext? context = null)
    {
        Training = training;
        Plan = ExecutionPlan.Create(training.Graph);
        _executor = new CpuExecutor(Plan, context);
    }

    /// <summary>
    /// A training step on <paramref name="backend"/> (cpu, emu, cuda); on a kernel device in <paramref name="context"/> when
    /// given (shared with the run's other executors), else in a context of its own. Its parameters are marked mutable.
    /// </summary>
    public TrainingSession(TrainingGraph training, ExecutionBackend backend, DeviceContext? context = null)
    {
        Training = training;
        Plan = ExecutionPlan.Create(training.Graph);
        if (context == null && backend.Kind != ExecutionBackend.BackendKind.Cpu) context = _ownContext = backend.OpenContext();
        if (context != null)
            foreach (var p in training.Parameters) context.MarkMutable(p.Value.Constant!);
        try { _executor = backend.CreateExecutor(Plan, context: context); }
        catch
        {
            _ownContext?.Dispose();
            throw;
        }
    }

    private readonly DeviceContext? _ownContext;

    public string BackendName => _executor.BackendName;

    /// <summary>The executor (a <see cref="DeviceExecutor"/> on kernel devices, for device-resident updates).</summary>
    public IPlanExecutor Executor => _executor;

    /// <summary>Runs forward, loss and backward. <paramref name="step"/> keys in-graph randomness (dropout).</summary>
    public StepResult Run(IReadOnlyDictionary<string, Tensor> inputs, ulong seed = 0, long step = 0)
    {
        _executor.Seed = seed;
        _executor.Step = step;
        var fetched = _executor.Run(inputs, new[] { Training.Loss, Training.Prediction });
        return new StepResult(fetched[Training.Loss.Name].ToFloat64Array()[0], fetched[Training.Prediction.Name]);
    }

    /// <summary>
    /// The gradient of a parameter after <see cref="Run"/>: on the CPU a view into the arena, valid until the
    /// next run; on a kernel device a downloaded copy.
    /// </summary>
    public Tensor Gradient(TrainableParameter p) => _executor.Read(p.Gradient);

    public Tensor InputGradient(string input) => _executor.Read(Training.InputGradients[input]);

    /// <summary>Call after the optimizer changed the parameters' host tensors: a kernel device uploads them again.</summary>
    public void ParametersUpdated()
    {
        foreach (var p in Training.Parameters) _executor.UploadParameter(p.Value);
    }

    public void Dispose()
    {
        _executor.Dispose();
        _ownContext?.Dispose();
        foreach (var o in Training.Graph.Owners) o.Dispose();
    }
}

public sealed record StepResult(double Loss, Tensor Prediction);
