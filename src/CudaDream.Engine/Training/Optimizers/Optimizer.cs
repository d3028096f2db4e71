using CudaDream.Engine.Tensors;

namespace CudaDream.Engine.Training.Optimizers;

/// <summary>
/// An optimizer over flat float32 parameters. State (moments, momentum buffers, step counts) is exposed as named
/// tensors so a checkpoint restores it exactly: <c>{group}/step</c> (I64 [1]) and <c>{group}/{parameter}/{slot}</c> (F32 [n]).
/// </summary>
public abstract class Optimizer
{
    public IReadOnlyList<ParameterGroup> Groups { get; }

    /// <summary>The per-parameter state slots, e.g. exp_avg and exp_avg_sq.</summary>
    protected IReadOnlyList<string> Slots { get; }

    /// <summary>fp32 state: [group][parameter][slot] → one value per parameter element, zero-initialised.</summary>
    protected readonly float[][][][] SlotData;

    protected Optimizer(IReadOnlyList<ParameterGroup> groups, params string[] slots)
    {
        var dup = groups.GroupBy(g => g.Name).FirstOrDefault(g => g.Count() > 1);
        if (dup != null) throw new ArgumentException($"parameter group '{dup.Key}' appears twice");
        Groups = groups;
        Slots = slots;
        SlotData = groups.Select(g => g.Parameters.Select(p => slots.Select(_ => new float[p.Length]).ToArray()).ToArray()).ToArray();
    }

    /// <summary>One update of every parameter from its gradient, with each group's current learning rate.</summary>
    public void Step()
    {
        BeginStep();
        foreach (var g in Groups)
        {
            g.StepCount++;
            for (int i = 0; i < g.Parameters.Count; i++) Update(g, i);
        }
        EndStep();
    }

    /// <summary>Before the parameters of an update (optimizers with state shared by every parameter, e.g. Prodigy's estimate).</summary>
    protected virtual void BeginStep() { }

    /// <summary>After every parameter of an update was visited.</summary>
    protected virtual void EndStep() { }

    protected abstract void Update(ParameterGroup group, int parameterIndex);

    private float[] StateSlot(ParameterGroup group, int parameterIndex, int slot) => SlotData[IndexOf(group)][parameterIndex][slot];

    protected int IndexOf(ParameterGroup group)
    {
        for (int i = 0; i < Groups.Count; i++) if (ReferenceEquals(Groups[i], group)) return i;
        throw new ArgumentException($"group '{group.Name}' does not belong to this optimizer");
    }

    /// <summary>Sets every group's learning rate to its base rate times <paramref name="multiplier"/> (an LR schedule's value).</summary>
    public void SetLearningRateMultiplier(double multiplier)
    {
        foreach (var g in Groups) g.LearningRate = g.BaseLearningRate * multiplier;
    }

    public void ZeroGrad()
    {
        foreach (var g in Groups) foreach (var p in g.Parameters) p.Grad.Span.Clear();
    }

    /// <summary>Bytes of optimizer state kept between updates (what a checkpoint's optimizer file holds, headers aside).</summary>
    public virtual long StateBytes =>
        Groups.Count * sizeof(long) + SlotData.Sum(g => g.Sum(p => p.Sum(s => (long)s.Length * sizeof(float))));

    /// <summary>An optimizer's state beyond the fp32 slots and the step counts (scalars, quantized moments), for checkpoints.</summary>
    protected virtual void SaveExtraState(Dictionary<string, Tensor> state) { }

    /// <summary>Throws a <see cref="CudaDreamException"/> naming the problem when <see cref="SaveExtraState"/>'s tensors are missing or malformed.</summary>
    protected virtual void ValidateExtraState(IReadOnlyDictionary<string, Tensor> state) { }

    /// <summary>Restores what <see cref="SaveExtraState"/> wrote (called only after every check passed).</summary>
    protected virtual void LoadExtraState(IReadOnlyDictionary<string, Tensor> state) { }

    /// <summary>The tensor <paramref name="key"/> of a checkpoint's state, checked for element type and count.</summary>
    protected static Tensor RequireState(IReadOnlyDictionary<string, Tensor> state, string key, DType dtype, long count)
    {
        if (!state.TryGetValue(key, out var t)) throw new CudaDreamException($"optimizer state has no '{key}'");
        if (t.DType != dtype || t.Numel != count) throw new CudaDreamException($"optimizer state '{key}' is {t}, expected {dtype} with {count} elements");
        return t;
    }

    public IReadOnlyDictionary<string, Tensor> State()
    {
        var d = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var g in Groups)
        {
            d[$"{g.Name}/step"] = Tensor.FromArray(new[] { g.StepCount }, 1);
            for (int i = 0; i < g.Parameters.Count; i++)
                for (int s = 0; s < Slots.Count; s++)
                    d[$"{g.Name}/{g.Parameters[i].Name}/{Slots[s]}"] = Tensor.FromArray((float[])StateSlot(g, i, s).Clone(), g.Parameters[i].Length);
        }
        SaveExtraState(d);
        return d;
    }

    /// <summary>Restores <see cref="State"/>; every tensor must be present with the parameter's length.</summary>
    public void Load(IReadOnlyDictionary<string, Tensor> state)
    {
        Tensor Need(string key)
        {
            if (!state.TryGetValue(key, out var t)) throw new CudaDreamException($"optimizer state has no '{key}'");
            return t;
        }
        // Validate everything before changing anything, so a bad checkpoint leaves the optimizer as it was.
        foreach (var g in Groups)
        {
            var step = Need($"{g.Name}/step");
            if (step.Numel != 1 || step.DType is not (DType.I64 or DType.I32)) throw new CudaDreamException($"optimizer state '{g.Name}/step' must be one integer");
            if (step.ToInt64Array()[0] < 0) throw new CudaDreamException($"optimizer state '{g.Name}/step' is negative");
            for (int i = 0; i < g.Parameters.Count; i++)
                foreach (var slot in Slots)
                {
                    var key = $"{g.Name}/{g.Parameters[i].Name}/{slot}";
                    var t = Need(key);
                    if (t.DType != DType.F32 || t.Numel != g.Parameters[i].Length)
                        throw new CudaDreamException($"optimizer state '{key}' is {t}, expected F32 with {g.Parameters[i].Length} elements");
                }
        }
        ValidateExtraState(state);
        foreach (var g in Groups)
        {
            g.StepCount = state[$"{g.Name}/step"].ToInt64Array()[0];
            for (int i = 0; i < g.Parameters.Count; i++)
                for (int s = 0; s < Slots.Count; s++)
                    state[$"{g.Name}/{g.Parameters[i].Name}/{Slots[s]}"].ReadOnlySpan<float>().CopyTo(StateSlot(g, i, s));
        }
        LoadExtraState(state);
    }
}
