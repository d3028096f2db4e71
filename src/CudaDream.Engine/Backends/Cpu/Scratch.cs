using System.Buffers;

namespace CudaDream.Engine.Backends.Cpu;

/// <summary>A pooled scratch buffer of T (returned on dispose).</summary>
internal readonly struct Scratch<T> : IDisposable where T : unmanaged
{
    private readonly T[] _array;
    private readonly int _length;
    private Scratch(T[] array, int length) { _array = array; _length = length; }
    public static Scratch<T> Rent(int length) => new(ArrayPool<T>.Shared.Rent(Math.Max(length, 1)), length);
    public Span<T> Span => _array.AsSpan(0, _length);
    public void Dispose() => ArrayPool<T>.Shared.Return(_array);
}
