using CudaDream.Engine.Randomness;

namespace CudaDream.Diffusion.Sampling;

/// <summary>
/// Noise for a batch in which image i has its own seed: each draw is split into one equal slice per image, and
/// slice i is draw d of the Philox stream (seed_i, purpose). So an image is the same whatever batch it is
/// generated in, and a seed reproduces it alone.
/// </summary>
public sealed class BatchNoise : INoiseSource
{
    private readonly PhiloxNoise[] _streams;

    public BatchNoise(IReadOnlyList<long> seeds, RandomPurpose purpose, long firstStep = 0) =>
        _streams = seeds.Select(s => new PhiloxNoise(unchecked((ulong)s), purpose, firstStep)).ToArray();

    public void Fill(Span<float> destination)
    {
        if (destination.Length % _streams.Length != 0)
            throw new ArgumentException($"a draw of {destination.Length} values does not split into {_streams.Length} images");
        int per = destination.Length / _streams.Length;
        for (int i = 0; i < _streams.Length; i++) _streams[i].Fill(destination.Slice(i * per, per));
    }
}
