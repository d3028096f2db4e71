using CudaDream.Engine.Tensors;

namespace CudaDream.Engine.Training;

/// <summary>
/// An exponential moving average of trained tensors, kept in fp32 beside them, as diffusers' EMAModel (training_utils,
/// update_after_step 0, min_decay 0, no inverse-gamma warm-up): after optimizer update number n (1-based)
/// <code>
///   k = n − 1;  decay_n = 0 when k ≤ 0, else min(decay, (1 + k)/(10 + k))
///   shadow ← shadow − (1 − decay_n)·(shadow − θ)
/// </code>
/// so the first update copies the weights and the warm-up lets early averages follow them. The shadow tensors start as
/// copies of the weights; a checkpoint keeps them (<see cref="State"/>) with the update count they have seen.
/// </summary>
public sealed class ExponentialMovingAverage
{
    private readonly IReadOnlyList<(string Name, Memory<float> Value)> _sources;
    private readonly Dictionary<string, float[]> _shadow = new(StringComparer.Ordinal);
    public double Decay { get; }
    /// <summary>Updates averaged so far (diffusers' optimization_step).</summary>
    public long Updates { get; private set; }

    public ExponentialMovingAverage(IEnumerable<(string Name, Memory<float> Value)> parameters, double decay)
    {
        if (!(decay is >= 0 and <= 1)) throw new CudaDreamException($"EMA decay {decay} is not in [0, 1]");
        Decay = decay;
        _sources = parameters.ToList();
        foreach (var (name, value) in _sources)
            if (!_shadow.TryAdd(name, value.ToArray())) throw new ArgumentException($"EMA: '{name}' appears twice");
    }

    /// <summary>The decay that update number <paramref name="update"/> (1-based) applies.</summary>
    public static double DecayAt(long update, double decay)
    {
        long k = Math.Max(0, update - 1);
        if (k <= 0) return 0.0;
        return Math.Min(decay, (1.0 + k) / (10.0 + k));
    }

    /// <summary>Averages the current weights in (call after each optimizer update).</summary>
    public void Update()
    {
        Updates++;
        float oneMinusDecay = (float)(1 - DecayAt(Updates, Decay));
        foreach (var (name, value) in _sources)
        {
            var shadow = _shadow[name];
            var theta = value.Span;
            for (int i = 0; i < shadow.Length; i++) shadow[i] -= oneMinusDecay * (shadow[i] - theta[i]);
        }
    }

    public ReadOnlySpan<float> Shadow(string name) => _shadow[name];

    /// <summary>Checkpoint tensors: each shadow under its name and <c>ema.updates</c> (I64 [1]).</summary>
    public Dictionary<string, Tensor> State()
    {
        var d = _shadow.ToDictionary(kv => kv.Key, kv => Tensor.FromArray((float[])kv.Value.Clone(), kv.Value.Length), StringComparer.Ordinal);
        d["ema.updates"] = Tensor.FromArray(new[] { Updates }, 1);
        return d;
    }

    /// <summary>Restores <see cref="State"/>, checking every tensor first (a bad file leaves the average as it was).</summary>
    public void Load(IReadOnlyDictionary<string, Tensor> state, string source)
    {
        foreach (var (name, shadow) in _shadow)
            if (!state.TryGetValue(name, out var t) || t.DType != DType.F32 || t.Numel != shadow.Length)
                throw new InvalidFileException(source, $"the EMA state lacks '{name}' as F32 with {shadow.Length} elements");
        if (!state.TryGetValue("ema.updates", out var u) || u.Numel != 1 || u.DType is not (DType.I64 or DType.I32) || u.ToInt64Array()[0] < 0)
            throw new InvalidFileException(source, "the EMA state lacks a non-negative 'ema.updates'");
        foreach (var (name, shadow) in _shadow) state[name].ReadOnlySpan<float>().CopyTo(shadow);
        Updates = u.ToInt64Array()[0];
    }
}
