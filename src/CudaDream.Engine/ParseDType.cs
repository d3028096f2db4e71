using CudaDream.Engine.Tensors;

namespace CudaDream.Engine;

/// <summary>The compute types users name (<c>--dtype</c>, <c>mixed_precision</c>): fp32, bf16, fp16.</summary>
public static class ParseDType
{
    public static readonly IReadOnlyList<string> Names = ["fp32", "bf16", "fp16"];

    public static DType Compute(string name) => name.Trim().ToLowerInvariant() switch
    {
        "fp32" or "f32" or "float32" or "no" => DType.F32,
        "bf16" or "bfloat16" => DType.BF16,
        "fp16" or "f16" or "float16" or "half" => DType.F16,
        _ => throw new CudaDreamException($"--dtype '{name}' is not fp32, bf16 or fp16"),
    };

    public static string Name(DType t) => t switch { DType.F32 => "fp32", DType.BF16 => "bf16", DType.F16 => "fp16", _ => t.ToString() };
}
