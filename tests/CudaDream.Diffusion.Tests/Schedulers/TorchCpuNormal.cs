using CudaDream.Engine.Randomness;

namespace CudaDream.Diffusion.Tests.Schedulers;

/// <summary>
/// torch.randn on the CPU generator (PyTorch 1.13) for float32 tensors of ≥ 16 elements, to replay diffusers tests
/// that draw from torch.manual_seed(0): MT19937 seeded like std::mt19937 (32-bit init), each element first gets
/// u = (word &amp; 0xFFFFFF)·2⁻²⁴, then every block of 16 is turned into normals by Box–Muller pairing element j with
/// j + 8 (radius from 1 − u_j, angle from u_{j+8}); a trailing partial block redraws the last 16. Computed in
/// float like torch's kernel (its vectorised log/sin/cos may differ by an ulp). Checked against torch's own
/// draws stored in the fixtures before use.
/// </summary>
internal sealed class TorchCpuNormal : INoiseSource
{
    private readonly uint[] _mt = new uint[624];
    private int _index;

    public TorchCpuNormal(uint seed)
    {
        _mt[0] = seed;
        for (uint i = 1; i < 624; i++) _mt[i] = 1812433253u * (_mt[i - 1] ^ (_mt[i - 1] >> 30)) + i;
        _index = 624;
    }

    private uint Next()
    {
        if (_index >= 624)
        {
            for (int i = 0; i < 624; i++)
            {
                uint y = (_mt[i] & 0x80000000u) | (_mt[(i + 1) % 624] & 0x7fffffffu);
                _mt[i] = _mt[(i + 397) % 624] ^ (y >> 1) ^ ((y & 1) != 0 ? 0x9908b0dfu : 0u);
            }
            _index = 0;
        }
        uint x = _mt[_index++];
        x ^= x >> 11;
        x ^= (x << 7) & 0x9d2c5680u;
        x ^= (x << 15) & 0xefc60000u;
        x ^= x >> 18;
        return x;
    }

    private float Uniform() => (Next() & 0xFFFFFF) * (1.0f / 16777216.0f);

    public void Fill(Span<float> d)
    {
        if (d.Length < 16) throw new NotSupportedException("torch uses another path below 16 elements");
        for (int i = 0; i < d.Length; i++) d[i] = Uniform();
        for (int i = 0; i + 16 <= d.Length; i += 16) Fill16(d.Slice(i, 16));
        if (d.Length % 16 != 0)
        {
            var tail = d[^16..];
            for (int i = 0; i < 16; i++) tail[i] = Uniform();
            Fill16(tail);
        }
    }

    private static void Fill16(Span<float> d)
    {
        for (int j = 0; j < 8; j++)
        {
            float u1 = 1 - d[j];
            float u2 = d[j + 8];
            float radius = MathF.Sqrt(-2 * MathF.Log(u1));
            float theta = 2.0f * MathF.PI * u2;
            d[j] = radius * MathF.Cos(theta);
            d[j + 8] = radius * MathF.Sin(theta);
        }
    }
}
