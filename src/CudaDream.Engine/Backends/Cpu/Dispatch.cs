using System.Numerics;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Tensors;

namespace CudaDream.Engine.Backends.Cpu;

/// <summary>A generic action instantiated for the element type of a tensor at run time.</summary>
internal interface INumericAction
{
    void Run<T>() where T : unmanaged, INumber<T>;
}

internal interface IFloatAction
{
    void Run<T>() where T : unmanaged, IFloatingPointIeee754<T>;
}

internal static class Dispatch
{
    public static void Numeric<TA>(Node node, DType dtype, TA action) where TA : INumericAction
    {
        switch (dtype)
        {
            case DType.F32: action.Run<float>(); break;
            case DType.F64: action.Run<double>(); break;
            case DType.I64: action.Run<long>(); break;
            case DType.I32: action.Run<int>(); break;
            case DType.I16: action.Run<short>(); break;
            case DType.I8: action.Run<sbyte>(); break;
            case DType.U8: action.Run<byte>(); break;
            default: throw new GraphException(node, $"element type {dtype} is not supported by the CPU backend for this op");
        }
    }

    public static void Float<TA>(Node node, DType dtype, TA action) where TA : IFloatAction
    {
        switch (dtype)
        {
            case DType.F32: action.Run<float>(); break;
            case DType.F64: action.Run<double>(); break;
            default: throw new GraphException(node, $"element type {dtype} is not supported by the CPU backend (float32/float64 only)");
        }
    }
}
