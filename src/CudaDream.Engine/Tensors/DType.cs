namespace CudaDream.Engine.Tensors;

/// <summary>Element types the engine stores. Names follow safetensors (F32, F16, ...).</summary>
public enum DType : byte
{
    F32, F16, BF16, F64, I64, I32, I16, I8, U8, Bool,
}

public static class DTypes
{
    public static int Size(this DType t) => t switch
    {
        DType.F64 or DType.I64 => 8,
        DType.F32 or DType.I32 => 4,
        DType.F16 or DType.BF16 or DType.I16 => 2,
        DType.I8 or DType.U8 or DType.Bool => 1,
        _ => throw new ArgumentOutOfRangeException(nameof(t)),
    };

    public static bool IsFloat(this DType t) => t is DType.F32 or DType.F16 or DType.BF16 or DType.F64;

    /// <summary>The safetensors spelling ("F32", "BOOL", ...).</summary>
    public static string SafetensorsName(this DType t) => t == DType.Bool ? "BOOL" : t.ToString();

    public static bool TryParseSafetensors(string s, out DType t)
    {
        switch (s)
        {
            case "F32": t = DType.F32; return true;
            case "F16": t = DType.F16; return true;
            case "BF16": t = DType.BF16; return true;
            case "F64": t = DType.F64; return true;
            case "I64": t = DType.I64; return true;
            case "I32": t = DType.I32; return true;
            case "I16": t = DType.I16; return true;
            case "I8": t = DType.I8; return true;
            case "U8": t = DType.U8; return true;
            case "BOOL": t = DType.Bool; return true;
            default: t = default; return false;
        }
    }

    /// <summary>ONNX TensorProto.DataType numbering.</summary>
    public static bool TryFromOnnx(int onnxType, out DType t)
    {
        switch (onnxType)
        {
            case 1: t = DType.F32; return true;
            case 2: t = DType.U8; return true;
            case 3: t = DType.I8; return true;
            case 5: t = DType.I16; return true;
            case 6: t = DType.I32; return true;
            case 7: t = DType.I64; return true;
            case 9: t = DType.Bool; return true;
            case 10: t = DType.F16; return true;
            case 11: t = DType.F64; return true;
            case 16: t = DType.BF16; return true;
            default: t = default; return false;
        }
    }

    public static int ToOnnx(this DType t) => t switch
    {
        DType.F32 => 1, DType.U8 => 2, DType.I8 => 3, DType.I16 => 5, DType.I32 => 6, DType.I64 => 7,
        DType.Bool => 9, DType.F16 => 10, DType.F64 => 11, DType.BF16 => 16,
        _ => throw new ArgumentOutOfRangeException(nameof(t)),
    };
}
