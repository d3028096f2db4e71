using CudaDream.Engine.Graph;
using CudaDream.Engine.Tensors;

namespace CudaDream.Engine.Backends;

/// <summary>
/// A backend's executor of one <see cref="ExecutionPlan"/> (cpu: <see cref="Cpu.CpuExecutor"/>; emu and
/// cuda: <see cref="Device.DeviceExecutor"/>). Sessions (inference, training) are written against it.
/// </summary>
public interface IPlanExecutor : IDisposable
{
    ExecutionPlan Plan { get; }
    /// <summary>"cpu", "emu sm_80", "cuda sm_86 (NVIDIA ...)".</summary>
    string BackendName { get; }
    /// <summary>Seed of in-graph random ops (RandomNormalLike, CounterDropout).</summary>
    ulong Seed { get; set; }
    /// <summary>Step index of in-graph random ops; with <see cref="Seed"/> it keys the draw.</summary>
    long Step { get; set; }
    /// <summary>Measure seconds per op type (a device synchronises after every node while on).</summary>
    bool Profile { get; set; }
    Dictionary<string, double> OpSeconds { get; }

    /// <summary>Copies inputs in, runs every step, and returns copies of the requested values (graph outputs by default).</summary>
    Dictionary<string, Tensor> Run(IReadOnlyDictionary<string, Tensor> inputs, IEnumerable<Value>? fetch = null);

    /// <summary>The current contents of a value (cpu: a view into the arena; devices: a downloaded copy).</summary>
    Tensor Read(Value v);

    /// <summary>Makes the executor see new host data of a constant (a trainable parameter the optimizer changed).</summary>
    void UploadParameter(Value v);
}
