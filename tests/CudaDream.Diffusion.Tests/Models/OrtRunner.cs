using CudaDream.Engine.Tensors;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Tensor = CudaDream.Engine.Tensors.Tensor;

namespace CudaDream.Diffusion.Tests.Models;

/// <summary>Runs an ONNX file on ONNX Runtime's CPU execution provider with tensors in and out.</summary>
internal static class OrtRunner
{
    public static Dictionary<string, Tensor> Run(string modelPath, Dictionary<string, Tensor> inputs)
    {
        using var options = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL, IntraOpNumThreads = 2 };
        using var session = new InferenceSession(modelPath, options);
        var names = inputs.Keys.ToArray();
        var values = names.Select(n => ToOrt(inputs[n])).ToArray();
        try
        {
            var outputNames = session.OutputNames.ToArray();
            using var runOptions = new RunOptions();
            using var outputs = session.Run(runOptions, names, values, outputNames);
            var result = new Dictionary<string, Tensor>();
            for (int i = 0; i < outputNames.Length; i++) result[outputNames[i]] = FromOrt(outputs[i]);
            return result;
        }
        finally
        {
            foreach (var v in values) v.Dispose();
        }
    }

    private static OrtValue ToOrt(Tensor t)
    {
        var shape = t.Shape.Select(d => (long)d).ToArray();
        return t.DType switch
        {
            DType.F32 => OrtValue.CreateTensorValueFromMemory(t.ReadOnlySpan<float>().ToArray(), shape),
            DType.F16 => OrtValue.CreateTensorValueFromMemory(t.ReadOnlySpan<ushort>().ToArray().Select(b => new Float16(b)).ToArray(), shape),
            DType.I32 => OrtValue.CreateTensorValueFromMemory(t.ReadOnlySpan<int>().ToArray(), shape),
            DType.I64 => OrtValue.CreateTensorValueFromMemory(t.ReadOnlySpan<long>().ToArray(), shape),
            _ => throw new NotSupportedException(t.DType.ToString()),
        };
    }

    private static Tensor FromOrt(OrtValue v)
    {
        var info = v.GetTensorTypeAndShape();
        var shape = info.Shape.Select(d => (int)d).ToArray();
        return info.ElementDataType switch
        {
            TensorElementType.Float => Tensor.FromSpan<float>(DType.F32, v.GetTensorDataAsSpan<float>(), shape),
            TensorElementType.Float16 => Tensor.FromSpan<ushort>(DType.F16, v.GetTensorDataAsSpan<Float16>().ToArray().Select(h => h.value).ToArray(), shape),
            TensorElementType.Int32 => Tensor.FromSpan<int>(DType.I32, v.GetTensorDataAsSpan<int>(), shape),
            TensorElementType.Int64 => Tensor.FromSpan<long>(DType.I64, v.GetTensorDataAsSpan<long>(), shape),
            _ => throw new NotSupportedException(info.ElementDataType.ToString()),
        };
    }
}

/// <summary>An ONNX file's initializers, copied out of the engine's reader.</summary>
internal static class OnnxWeights
{
    public static Dictionary<string, Tensor> Read(string modelPath)
    {
        using var m = CudaDream.Engine.Formats.OnnxModel.Load(modelPath);
        return m.Initializers.ToDictionary(kv => kv.Key, kv => kv.Value.Clone());
    }
}
