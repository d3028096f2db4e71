using System.Numerics;
using System.Runtime.InteropServices;
using CudaDream.Engine.Tensors;

namespace CudaDream.Engine.Backends.Cpu;

/// <summary>
/// The choice every op home makes between its fast fp32 kernels and its reference loops: fast when the
/// context allows it and T is float; the reference (float64 for gradient checks, or on request) otherwise.
/// Both have one signature, so an op's CPU entry point is a one-line switch over <see cref="Use{T}"/>.
/// </summary>
internal static class FastKernels
{
    public static bool Use<T>(CpuContext c) => c.UseFastKernels && typeof(T) == typeof(float);

    public static ReadOnlySpan<float> F<T>(ReadOnlySpan<T> s) where T : unmanaged => MemoryMarshal.Cast<T, float>(s);
    public static Span<float> F<T>(Span<T> s) where T : unmanaged => MemoryMarshal.Cast<T, float>(s);
    public static float F<T>(T v) where T : INumberBase<T> => float.CreateTruncating(v);
}

/// <summary>Optional operands of a CPU op (absent inputs are null; unread outputs get no buffer).</summary>
internal static class CpuOperands
{
    public static ReadOnlySpan<T> Optional<T>(Tensor?[] inputs, int i) where T : unmanaged =>
        inputs.Length > i && inputs[i] != null ? inputs[i]!.ReadOnlySpan<T>() : ReadOnlySpan<T>.Empty;

    public static Span<T> OptionalOut<T>(Tensor[] outputs, int i, bool present) where T : unmanaged =>
        present && outputs.Length > i ? outputs[i].Span<T>() : Span<T>.Empty;
}
