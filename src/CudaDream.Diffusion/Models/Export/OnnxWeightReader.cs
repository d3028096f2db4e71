using CudaDream.Engine;
using CudaDream.Engine.Tensors;
using Google.Protobuf;
using Onnx;

namespace CudaDream.Diffusion.Models.Export;

/// <summary>
/// Reads the initializers of an ONNX file by name (inline raw/typed data or external data files beside
/// it), every size and offset checked. A stop-gap until the engine's OnnxModel reader covers it; the
/// export path only needs weights by name.
/// </summary>
public static class OnnxWeightReader
{
    public static Dictionary<string, Tensor> Read(string modelPath)
    {
        if (!File.Exists(modelPath)) throw new InvalidFileException(modelPath, "file not found");
        ModelProto model;
        try
        {
            using var s = File.OpenRead(modelPath);
            model = ModelProto.Parser.ParseFrom(s);
        }
        catch (InvalidProtocolBufferException e) { throw new InvalidFileException(modelPath, $"not an ONNX model ({e.Message})"); }
        var dir = Path.GetDirectoryName(Path.GetFullPath(modelPath))!;
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        var handles = new Dictionary<string, FileStream>(StringComparer.Ordinal);
        try
        {
            foreach (var t in model.Graph.Initializer)
                result[t.Name] = ToTensor(t, modelPath, dir, handles);
        }
        finally
        {
            foreach (var h in handles.Values) h.Dispose();
        }
        return result;
    }

    private static Tensor ToTensor(TensorProto t, string modelPath, string dir, Dictionary<string, FileStream> handles)
    {
        if (!DTypes.TryFromOnnx(t.DataType, out var dtype)) throw new InvalidFileException(modelPath, $"initializer '{t.Name}' has unsupported element type {t.DataType}");
        if (t.Dims.Any(d => d < 0 || d > int.MaxValue)) throw new InvalidFileException(modelPath, $"initializer '{t.Name}' has an invalid dimension");
        var shape = t.Dims.Select(d => (int)d).ToArray();
        long bytes = Shapes.Numel(shape) * dtype.Size();
        if (bytes > int.MaxValue) throw new InvalidFileException(modelPath, $"initializer '{t.Name}' is larger than 2 GiB");

        if (t.DataLocation == TensorProto.Types.DataLocation.External)
        {
            string? location = null;
            long offset = 0, length = bytes;
            foreach (var e in t.ExternalData)
            {
                if (e.Key == "location") location = e.Value;
                else if (e.Key == "offset" && !long.TryParse(e.Value, out offset)) throw new InvalidFileException(modelPath, $"initializer '{t.Name}': bad offset");
                else if (e.Key == "length" && !long.TryParse(e.Value, out length)) throw new InvalidFileException(modelPath, $"initializer '{t.Name}': bad length");
            }
            if (location == null || Path.IsPathRooted(location) || location.Contains(".."))
                throw new InvalidFileException(modelPath, $"initializer '{t.Name}': external data location '{location}' must be a file beside the model");
            if (length != bytes) throw new InvalidFileException(modelPath, $"initializer '{t.Name}': external length {length} but {dtype}{Shapes.Format(shape)} needs {bytes} bytes");
            var path = Path.Combine(dir, location);
            if (!handles.TryGetValue(path, out var fs))
            {
                if (!File.Exists(path)) throw new InvalidFileException(path, $"external weights of {modelPath} not found");
                handles[path] = fs = File.OpenRead(path);
            }
            if (offset < 0 || offset + bytes > fs.Length) throw new InvalidFileException(path, $"initializer '{t.Name}' at {offset}+{bytes} runs past the end of the file ({fs.Length} bytes): truncated?");
            var data = new byte[bytes];
            fs.Position = offset;
            fs.ReadExactly(data);
            return new Tensor(dtype, shape, data);
        }
        if (!t.RawData.IsEmpty)
        {
            if (t.RawData.Length != bytes) throw new InvalidFileException(modelPath, $"initializer '{t.Name}' holds {t.RawData.Length} bytes, {dtype}{Shapes.Format(shape)} needs {bytes}");
            return new Tensor(dtype, shape, t.RawData.ToByteArray());
        }
        // Typed fields (rare in exported weights).
        int n = checked((int)Shapes.Numel(shape));
        Tensor FromCount<T>(int count, Func<Tensor> make) => count == n ? make() : throw new InvalidFileException(modelPath, $"initializer '{t.Name}' holds {count} values, expected {n}");
        return dtype switch
        {
            DType.F32 => FromCount<float>(t.FloatData.Count, () => Tensor.FromArray(t.FloatData.ToArray(), shape)),
            DType.I64 => FromCount<long>(t.Int64Data.Count, () => Tensor.FromArray(t.Int64Data.ToArray(), shape)),
            DType.I32 => FromCount<int>(t.Int32Data.Count, () => Tensor.FromArray(t.Int32Data.ToArray(), shape)),
            DType.F64 => FromCount<double>(t.DoubleData.Count, () => Tensor.FromArray(t.DoubleData.ToArray(), shape)),
            DType.F16 => FromCount<int>(t.Int32Data.Count, () => Tensor.FromSpan<ushort>(DType.F16, t.Int32Data.Select(v => (ushort)v).ToArray(), shape)),
            _ => throw new InvalidFileException(modelPath, $"initializer '{t.Name}': {dtype} without raw data is not supported"),
        };
    }
}
