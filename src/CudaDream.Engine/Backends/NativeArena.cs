using System.Runtime.InteropServices;
using CudaDream.Engine.Tensors;

namespace CudaDream.Engine.Backends;

/// <summary>One block of native host memory, 64-byte aligned, carved into tensors by offset (the CPU backend's arena).</summary>
public sealed unsafe class NativeArena : IDisposable
{
    private byte* _ptr;
    public long Bytes { get; }

    public NativeArena(long bytes)
    {
        Bytes = Math.Max(bytes, 64);
        _ptr = (byte*)NativeMemory.AlignedAlloc((nuint)Bytes, 64);
        if (_ptr == null) throw new OutOfMemoryException($"cannot allocate an arena of {bytes} bytes");
        GC.AddMemoryPressure(Bytes);
    }

    public Memory<byte> Slice(long offset, int length)
    {
        ObjectDisposedException.ThrowIf(_ptr == null, this);
        if (offset < 0 || offset + length > Bytes) throw new ArgumentOutOfRangeException(nameof(offset), $"slice {offset}+{length} outside arena of {Bytes} bytes");
        return length == 0 ? Memory<byte>.Empty : new UnmanagedMemory(_ptr + offset, length, this).Memory;
    }

    public Tensor Tensor(DType dtype, int[] shape, long offset) =>
        new(dtype, shape, Slice(offset, checked((int)(Shapes.Numel(shape) * dtype.Size()))));

    public void Dispose()
    {
        if (_ptr == null) return;
        NativeMemory.AlignedFree(_ptr);
        _ptr = null;
        GC.RemoveMemoryPressure(Bytes);
        GC.SuppressFinalize(this);
    }

    ~NativeArena() => Dispose();
}
