using CudaDream.Engine;
using CudaDream.Engine.Tensors;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Tensor = CudaDream.Engine.Tensors.Tensor;

namespace CudaDream.Diffusion.Sampling.Engines;

/// <summary>
/// A host buffer an ONNX Runtime tensor is created over once and rewritten in place, so that a step feeds the
/// UNet without allocating: floats are stored as the graph's element type (float, float16, int32, int64).
/// </summary>
internal sealed class OrtBuffer : IDisposable
{
    private readonly float[]? _f32;
    private readonly Float16[]? _f16;
    private readonly int[]? _i32;
    private readonly long[]? _i64;

    public OrtValue Value { get; }
    public TensorElementType Type { get; }
    public int Length { get; }

    public OrtBuffer(TensorElementType type, long[] shape)
    {
        Type = type;
        Length = checked((int)shape.Aggregate(1L, (a, b) => a * b));
        Value = type switch
        {
            TensorElementType.Float => OrtValue.CreateTensorValueFromMemory(_f32 = new float[Length], shape),
            TensorElementType.Float16 => OrtValue.CreateTensorValueFromMemory(_f16 = new Float16[Length], shape),
            TensorElementType.Int32 => OrtValue.CreateTensorValueFromMemory(_i32 = new int[Length], shape),
            TensorElementType.Int64 => OrtValue.CreateTensorValueFromMemory(_i64 = new long[Length], shape),
            _ => throw new CudaDreamException($"ONNX Runtime sampler: graph tensors of type {type} are not supported"),
        };
    }

    public void Write(ReadOnlySpan<float> values)
    {
        if (values.Length != Length) throw new ArgumentException($"buffer holds {Length} values, got {values.Length}");
        if (_f32 != null) values.CopyTo(_f32);
        else if (_f16 != null) for (int i = 0; i < values.Length; i++) _f16[i] = OrtTensors.ToFloat16(values[i]);
        else if (_i32 != null) for (int i = 0; i < values.Length; i++) _i32[i] = (int)MathF.Round(values[i]);
        else for (int i = 0; i < values.Length; i++) _i64![i] = (long)MathF.Round(values[i]);
    }

    public void Fill(float value)
    {
        for (int i = 0; i < Length; i++)
        {
            if (_f32 != null) _f32[i] = value;
            else if (_f16 != null) _f16[i] = OrtTensors.ToFloat16(value);
            else if (_i32 != null) _i32[i] = (int)MathF.Round(value);
            else _i64![i] = (long)MathF.Round(value);
        }
    }

    public void Read(Span<float> destination)
    {
        if (destination.Length != Length) throw new ArgumentException($"buffer holds {Length} values, destination {destination.Length}");
        if (_f32 != null) _f32.CopyTo(destination);
        else if (_f16 != null) for (int i = 0; i < Length; i++) destination[i] = OrtTensors.ToSingle(_f16[i]);
        else throw new InvalidOperationException("integer buffers are inputs only");
    }

    public void Dispose() => Value.Dispose();
}

/// <summary>Conversions between engine tensors and ONNX Runtime values.</summary>
internal static class OrtTensors
{
    public static Float16 ToFloat16(float v) => new(BitConverter.HalfToUInt16Bits((Half)v));
    public static float ToSingle(Float16 v) => (float)BitConverter.UInt16BitsToHalf(v.value);

    public static long[] Shape(Tensor t) => t.Shape.Select(d => (long)d).ToArray();

    /// <summary>A new ONNX Runtime value holding <paramref name="t"/> converted to <paramref name="type"/> (the graph's input type).</summary>
    public static OrtValue ToOrt(Tensor t, TensorElementType type)
    {
        var shape = Shape(t);
        return type switch
        {
            TensorElementType.Float => OrtValue.CreateTensorValueFromMemory(t.ToFloat32Array(), shape),
            TensorElementType.Float16 => OrtValue.CreateTensorValueFromMemory(t.To(DType.F16).ReadOnlySpan<ushort>().ToArray().Select(b => new Float16(b)).ToArray(), shape),
            TensorElementType.Int32 => OrtValue.CreateTensorValueFromMemory(t.To(DType.I32).ReadOnlySpan<int>().ToArray(), shape),
            TensorElementType.Int64 => OrtValue.CreateTensorValueFromMemory(t.To(DType.I64).ReadOnlySpan<long>().ToArray(), shape),
            _ => throw new CudaDreamException($"ONNX Runtime sampler: graph tensors of type {type} are not supported"),
        };
    }

    /// <summary>A value for an initializer override, in the initializer's own element type.</summary>
    public static OrtValue Initializer(Tensor t) => t.DType switch
    {
        DType.F32 => ToOrt(t, TensorElementType.Float),
        DType.F16 => ToOrt(t, TensorElementType.Float16),
        _ => throw new CudaDreamException($"ONNX Runtime sampler: cannot override a {t.DType} initializer"),
    };

    /// <summary>A host copy as F32.</summary>
    public static Tensor ToFloatTensor(OrtValue v)
    {
        var info = v.GetTensorTypeAndShape();
        var shape = info.Shape.Select(d => checked((int)d)).ToArray();
        return info.ElementDataType switch
        {
            TensorElementType.Float => Tensor.FromSpan<float>(DType.F32, v.GetTensorDataAsSpan<float>(), shape),
            TensorElementType.Float16 => Tensor.FromArray(v.GetTensorDataAsSpan<Float16>().ToArray().Select(ToSingle).ToArray(), shape),
            var other => throw new CudaDreamException($"ONNX Runtime sampler: graph output of type {other} is not supported"),
        };
    }
}
