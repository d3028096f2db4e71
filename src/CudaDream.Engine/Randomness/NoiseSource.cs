using CudaDream.Engine.Tensors;

namespace CudaDream.Engine.Randomness;

/// <summary>A stream of standard-normal tensors, consumed in order (e.g. the noise an ancestral sampler adds per step).</summary>
public interface INoiseSource
{
    /// <summary>Fills the destination with the next draw.</summary>
    void Fill(Span<float> destination);
}

/// <summary>
/// Philox-backed noise: draw d (0, 1, 2, …) is <see cref="CounterRng.FillNormal"/> of (seed, step = firstStep + d,
/// purpose), elements 0..n-1. Nothing but the draw counter is state, so a stream can be resumed by
/// constructing it with firstStep = the number of draws already taken.
/// </summary>
public sealed class PhiloxNoise : INoiseSource
{
    public ulong Seed { get; }
    public RandomPurpose Purpose { get; }
    public long FirstStep { get; }
    /// <summary>Draws taken so far.</summary>
    public long Draws { get; private set; }

    public PhiloxNoise(ulong seed, RandomPurpose purpose = RandomPurpose.SamplerNoise, long firstStep = 0)
    {
        Seed = seed; Purpose = purpose; FirstStep = firstStep;
    }

    public void Fill(Span<float> destination)
    {
        CounterRng.FillNormal(destination, Seed, FirstStep + Draws, Purpose);
        Draws++;
    }
}

/// <summary>Replays recorded draws in order (used to feed the noise a reference run drew, e.g. torch's).</summary>
public sealed class RecordedNoise : INoiseSource
{
    private readonly IReadOnlyList<float[]> _draws;
    public int Draws { get; private set; }
    public int Count => _draws.Count;

    public RecordedNoise(IReadOnlyList<float[]> draws) => _draws = draws;

    /// <summary>Each slice along the first axis of <paramref name="stacked"/> is one draw.</summary>
    public static RecordedNoise FromStacked(Tensor stacked)
    {
        var all = stacked.ToFloat32Array();
        int n = stacked.Shape[0];
        int per = n == 0 ? 0 : all.Length / n;
        var draws = new float[n][];
        for (int i = 0; i < n; i++) draws[i] = all.AsSpan(i * per, per).ToArray();
        return new RecordedNoise(draws);
    }

    public void Fill(Span<float> destination)
    {
        if (Draws >= _draws.Count) throw new InvalidOperationException($"recorded noise exhausted after {_draws.Count} draws");
        var d = _draws[Draws];
        if (d.Length != destination.Length) throw new InvalidOperationException($"recorded draw {Draws} has {d.Length} elements, {destination.Length} requested");
        d.CopyTo(destination);
        Draws++;
    }
}
