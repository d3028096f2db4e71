using System.Runtime.InteropServices;
using CudaDream.Engine.Backends;
using CudaDream.Engine.Backends.Emu;
using CudaDream.Engine.Ops;

namespace CudaDream.Engine.Tests.Emu;

/// <summary>Uploads, downloads and random data for kernel tests on the emulated device.</summary>
internal sealed class EmuSession : IDisposable
{
    private readonly List<DeviceBuffer> _buffers = new();
    public IKernelDevice Device { get; }

    public EmuSession(int tier, EmuGuard guard = EmuGuard.After, ulong seed = 1) =>
        Device = new EmuDevice(new EmuOptions { Tier = tier, Guard = guard, Seed = seed });

    public DevicePtr Upload(float[] data)
    {
        var b = Device.Allocate(data.Length * 4L);
        _buffers.Add(b);
        Device.CopyToDevice(b.Ptr, MemoryMarshal.AsBytes(data.AsSpan()));
        return b.Ptr;
    }

    public DevicePtr Upload<T>(T[] data) where T : unmanaged
    {
        var b = Device.Allocate(data.Length * (long)Marshal.SizeOf<T>());
        _buffers.Add(b);
        Device.CopyToDevice(b.Ptr, MemoryMarshal.AsBytes(data.AsSpan()));
        return b.Ptr;
    }

    /// <summary>n floats of device memory filled with NaN, so an element a kernel forgets to write shows.</summary>
    public DevicePtr Output(long n) => Upload(Enumerable.Repeat(float.NaN, checked((int)n)).ToArray());

    public float[] Download(DevicePtr p, long n)
    {
        var r = new float[n];
        Device.Synchronize();
        Device.CopyToHost(MemoryMarshal.AsBytes(r.AsSpan()), p);
        return r;
    }

    /// <summary>n elements of raw device memory as <typeparamref name="T"/> (bf16/fp16 bit patterns, integers).</summary>
    public T[] Download<T>(DevicePtr p, long n) where T : unmanaged
    {
        var r = new T[n];
        Device.Synchronize();
        Device.CopyToHost(MemoryMarshal.AsBytes(r.AsSpan()), p);
        return r;
    }

    public static float[] Random(int n, int seed, float scale = 1f)
    {
        var rng = new Random(seed);
        var r = new float[n];
        for (int i = 0; i < n; i++) r[i] = (float)(rng.NextDouble() * 2 - 1) * scale;
        return r;
    }

    public void Dispose()
    {
        foreach (var b in _buffers) b.Dispose();
        Device.Dispose();
    }
}

public static class EmuTiers
{
    /// <summary>Every emulated architecture tier, so every __CUDA_ARCH__ branch of the kernels runs.</summary>
    public static IEnumerable<object[]> All => EmuLibrary.Tiers.Select(t => new object[] { t });
}
