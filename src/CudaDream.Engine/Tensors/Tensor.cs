using System.Buffers;
using System.Runtime.InteropServices;

namespace CudaDream.Engine.Tensors;

/// <summary>
/// A dense, row-major tensor: element type, shape and bytes. The bytes are any <see cref="Memory{T}"/>:
/// a managed array, a slice of a memory-mapped weight file, or a protobuf buffer — a tensor never
/// copies what it is given, so a weight exists once in memory.
/// </summary>
public sealed class Tensor
{
    public DType DType { get; }
    public int[] Shape { get; }
    public Memory<byte> Data { get; }

    public Tensor(DType dtype, int[] shape, Memory<byte> data)
    {
        long n = Shapes.Numel(shape);
        if (n * dtype.Size() != data.Length)
            throw new ArgumentException($"tensor of {dtype}{Shapes.Format(shape)} needs {n * dtype.Size()} bytes, got {data.Length}");
        DType = dtype;
        Shape = shape;
        Data = data;
    }

    public int Rank => Shape.Length;
    public int Numel => checked((int)Shapes.Numel(Shape));
    public long ByteLength => Data.Length;

    public Span<T> Span<T>() where T : unmanaged => MemoryMarshal.Cast<byte, T>(Data.Span);
    /// <summary>The elements as a <see cref="Memory{T}"/> over the same storage (for APIs that keep a buffer, like optimizers).</summary>
    public Memory<T> Memory<T>() where T : unmanaged => new CastMemory<T>(Data).Memory;
    public ReadOnlySpan<T> ReadOnlySpan<T>() where T : unmanaged => MemoryMarshal.Cast<byte, T>(Data.Span);

    public static Tensor Zeros(DType dtype, params int[] shape) =>
        new(dtype, (int[])shape.Clone(), new byte[checked(Shapes.Numel(shape) * dtype.Size())]);

    public static Tensor FromArray(float[] data, params int[] shape) => FromSpan<float>(DType.F32, data, shape);
    public static Tensor FromArray(double[] data, params int[] shape) => FromSpan<double>(DType.F64, data, shape);
    public static Tensor FromArray(long[] data, params int[] shape) => FromSpan<long>(DType.I64, data, shape);
    public static Tensor FromArray(int[] data, params int[] shape) => FromSpan<int>(DType.I32, data, shape);

    public static Tensor FromSpan<T>(DType dtype, ReadOnlySpan<T> data, int[] shape) where T : unmanaged
    {
        var bytes = MemoryMarshal.AsBytes(data).ToArray();
        return new Tensor(dtype, (int[])shape.Clone(), bytes);
    }

    public static Tensor Scalar(float v) => FromArray(new[] { v });

    /// <summary>Same bytes, another shape with the same element count.</summary>
    public Tensor Reshape(params int[] shape)
    {
        if (Shapes.Numel(shape) != Numel) throw new ArgumentException($"cannot reshape {Shapes.Format(Shape)} to {Shapes.Format(shape)}");
        return new Tensor(DType, (int[])shape.Clone(), Data);
    }

    /// <summary>A copy in managed memory (detached from any mapped file).</summary>
    public Tensor Clone() => new(DType, (int[])Shape.Clone(), Data.ToArray());

    /// <summary>Values as float32, converting from any element type.</summary>
    public float[] ToFloat32Array()
    {
        var r = new float[Numel];
        CopyToFloat32(r);
        return r;
    }

    /// <summary>
    /// Writes the values as float32 into <paramref name="destination"/> (exactly <see cref="Numel"/> long): the widening of
    /// a half-precision model on load writes each weight once, without a temporary array of its size.
    /// </summary>
    public void CopyToFloat32(Span<float> destination)
    {
        if (destination.Length != Numel) throw new ArgumentException($"destination holds {destination.Length} floats, the tensor {Numel}");
        var r = destination;
        switch (DType)
        {
            case DType.F32: ReadOnlySpan<float>().CopyTo(r); break;
            case DType.F64: { var s = ReadOnlySpan<double>(); for (int i = 0; i < r.Length; i++) r[i] = (float)s[i]; break; }
            case DType.F16: System.Numerics.Tensors.TensorPrimitives.ConvertToSingle(ReadOnlySpan<Half>(), r); break;
            case DType.BF16: { var s = ReadOnlySpan<ushort>(); for (int i = 0; i < r.Length; i++) r[i] = BFloat16.ToSingle(s[i]); break; }
            case DType.I64: { var s = ReadOnlySpan<long>(); for (int i = 0; i < r.Length; i++) r[i] = s[i]; break; }
            case DType.I32: { var s = ReadOnlySpan<int>(); for (int i = 0; i < r.Length; i++) r[i] = s[i]; break; }
            case DType.I16: { var s = ReadOnlySpan<short>(); for (int i = 0; i < r.Length; i++) r[i] = s[i]; break; }
            case DType.I8: { var s = ReadOnlySpan<sbyte>(); for (int i = 0; i < r.Length; i++) r[i] = s[i]; break; }
            case DType.U8 or DType.Bool: { var s = Data.Span; for (int i = 0; i < r.Length; i++) r[i] = s[i]; break; }
            default: throw new NotSupportedException(DType.ToString());
        }
    }

    /// <summary>Values as float64, converting from any element type.</summary>
    public double[] ToFloat64Array()
    {
        if (DType == DType.F64) return ReadOnlySpan<double>().ToArray();
        if (DType == DType.I64) { var s = ReadOnlySpan<long>(); var d = new double[s.Length]; for (int i = 0; i < d.Length; i++) d[i] = s[i]; return d; }
        var f = ToFloat32Array();
        var r = new double[f.Length];
        for (int i = 0; i < f.Length; i++) r[i] = f[i];
        return r;
    }

    /// <summary>Values as int64 (integer and bool types; floats are truncated toward zero).</summary>
    public long[] ToInt64Array()
    {
        var r = new long[Numel];
        switch (DType)
        {
            case DType.I64: ReadOnlySpan<long>().CopyTo(r); break;
            case DType.I32: { var s = ReadOnlySpan<int>(); for (int i = 0; i < r.Length; i++) r[i] = s[i]; break; }
            case DType.I16: { var s = ReadOnlySpan<short>(); for (int i = 0; i < r.Length; i++) r[i] = s[i]; break; }
            case DType.I8: { var s = ReadOnlySpan<sbyte>(); for (int i = 0; i < r.Length; i++) r[i] = s[i]; break; }
            case DType.U8 or DType.Bool: { var s = Data.Span; for (int i = 0; i < r.Length; i++) r[i] = s[i]; break; }
            default: { var f = ToFloat64Array(); for (int i = 0; i < r.Length; i++) r[i] = (long)f[i]; break; }
        }
        return r;
    }

    /// <summary>This tensor converted to another element type (a new buffer; same tensor if already that type).</summary>
    public Tensor To(DType target)
    {
        if (target == DType) return this;
        var t = Zeros(target, Shape);
        switch (target)
        {
            case DType.F32: CopyToFloat32(t.Span<float>()); break;
            case DType.F64: ToFloat64Array().CopyTo(t.Span<double>()); break;
            case DType.F16: { var f = ToFloat32Array(); var d = t.Span<Half>(); for (int i = 0; i < f.Length; i++) d[i] = (Half)f[i]; break; }
            case DType.BF16: { var f = ToFloat32Array(); var d = t.Span<ushort>(); for (int i = 0; i < f.Length; i++) d[i] = BFloat16.FromSingle(f[i]); break; }
            case DType.I64: ToInt64Array().CopyTo(t.Span<long>()); break;
            case DType.I32: { var v = ToInt64Array(); var d = t.Span<int>(); for (int i = 0; i < v.Length; i++) d[i] = (int)v[i]; break; }
            case DType.I16: { var v = ToInt64Array(); var d = t.Span<short>(); for (int i = 0; i < v.Length; i++) d[i] = (short)v[i]; break; }
            case DType.I8: { var v = ToInt64Array(); var d = t.Span<sbyte>(); for (int i = 0; i < v.Length; i++) d[i] = (sbyte)v[i]; break; }
            case DType.U8: { var v = ToInt64Array(); var d = t.Data.Span; for (int i = 0; i < v.Length; i++) d[i] = (byte)v[i]; break; }
            case DType.Bool:
                {
                    var d = t.Data.Span;
                    if (DType.IsFloat()) { var f = ToFloat64Array(); for (int i = 0; i < f.Length; i++) d[i] = f[i] != 0 ? (byte)1 : (byte)0; }
                    else { var v = ToInt64Array(); for (int i = 0; i < v.Length; i++) d[i] = v[i] != 0 ? (byte)1 : (byte)0; }
                    break;
                }
            default: throw new NotSupportedException(target.ToString());
        }
        return t;
    }

    public override string ToString() => $"{DType}{Shapes.Format(Shape)}";
}

/// <summary>bfloat16 conversions (round to nearest even, NaN kept quiet).</summary>
public static class BFloat16
{
    public static float ToSingle(ushort bits) => BitConverter.Int32BitsToSingle(bits << 16);

    public static ushort FromSingle(float f)
    {
        uint u = BitConverter.SingleToUInt32Bits(f);
        if (float.IsNaN(f)) return (ushort)((u >> 16) | 0x40);
        uint rounding = 0x7FFF + ((u >> 16) & 1);
        return (ushort)((u + rounding) >> 16);
    }
}

/// <summary>Shape arithmetic.</summary>
public static class Shapes
{
    public static long Numel(ReadOnlySpan<int> shape)
    {
        long n = 1;
        foreach (var d in shape)
        {
            if (d < 0) throw new ArgumentException($"negative dimension in {Format(shape)}");
            n = checked(n * d);
        }
        return n;
    }

    public static string Format(ReadOnlySpan<int> shape) => "[" + string.Join(",", shape.ToArray()) + "]";

    public static bool Equal(ReadOnlySpan<int> a, ReadOnlySpan<int> b) => a.SequenceEqual(b);

    /// <summary>Row-major strides in elements.</summary>
    public static long[] Strides(ReadOnlySpan<int> shape)
    {
        var s = new long[shape.Length];
        long acc = 1;
        for (int i = shape.Length - 1; i >= 0; i--) { s[i] = acc; acc *= shape[i]; }
        return s;
    }

    /// <summary>NumPy broadcasting of two shapes; null when they do not broadcast.</summary>
    public static int[]? Broadcast(ReadOnlySpan<int> a, ReadOnlySpan<int> b)
    {
        int r = Math.Max(a.Length, b.Length);
        var o = new int[r];
        for (int i = 0; i < r; i++)
        {
            int da = i < r - a.Length ? 1 : a[i - (r - a.Length)];
            int db = i < r - b.Length ? 1 : b[i - (r - b.Length)];
            if (da == db || db == 1) o[i] = da;
            else if (da == 1) o[i] = db;
            else return null;
        }
        return o;
    }

    /// <summary>Normalises a possibly negative axis against a rank.</summary>
    public static int Axis(long axis, int rank)
    {
        long a = axis < 0 ? axis + rank : axis;
        if (a < 0 || a >= Math.Max(rank, 1)) throw new ArgumentOutOfRangeException(nameof(axis), $"axis {axis} out of range for rank {rank}");
        return (int)a;
    }
}

/// <summary>Wraps a pointer range (e.g. a memory-mapped file view) as <see cref="Memory{T}"/>; the owner keeps the mapping alive.</summary>
public sealed unsafe class UnmanagedMemory : MemoryManager<byte>
{
    private readonly byte* _ptr;
    private readonly int _length;
    private readonly object? _owner;

    public UnmanagedMemory(byte* ptr, int length, object? owner) { _ptr = ptr; _length = length; _owner = owner; }

    public override Span<byte> GetSpan() => new(_ptr, _length);
    public override MemoryHandle Pin(int elementIndex = 0) => new(_ptr + elementIndex, default, this);
    public override void Unpin() { }
    protected override void Dispose(bool disposing) { }
    public object? Owner => _owner;
}

/// <summary>Views a <see cref="Memory{T}"/> of bytes as another element type without copying (spans are reinterpreted on access).</summary>
public sealed class CastMemory<T> : MemoryManager<T> where T : unmanaged
{
    private readonly Memory<byte> _bytes;

    public CastMemory(Memory<byte> bytes) => _bytes = bytes;

    public override Span<T> GetSpan() => MemoryMarshal.Cast<byte, T>(_bytes.Span);

    public override MemoryHandle Pin(int elementIndex = 0)
    {
        var h = _bytes.Pin();
        unsafe { return new MemoryHandle((byte*)h.Pointer + elementIndex * System.Runtime.CompilerServices.Unsafe.SizeOf<T>(), default, this); }
    }

    public override void Unpin() { }
    protected override void Dispose(bool disposing) { }
}
