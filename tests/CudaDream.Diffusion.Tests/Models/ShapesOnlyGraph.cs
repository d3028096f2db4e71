using CudaDream.Diffusion.Models.Builder;
using CudaDream.Engine.Tensors;

namespace CudaDream.Diffusion.Tests;

/// <summary>Writes a weightless build like the sd15-structure fixture: every initializer points into an absent weights file.</summary>
internal static class ShapesOnlyGraph
{
    public static void Write(BuiltGraph built, string path)
    {
        var model = built.Model.Clone();
        long offset = 0;
        foreach (var i in built.Initializers)
        {
            var t = new Onnx.TensorProto { Name = i.Name, DataType = i.DType.ToOnnx(), DataLocation = Onnx.TensorProto.Types.DataLocation.External };
            t.Dims.AddRange(i.Shape.Select(d => (long)d));
            long bytes = Shapes.Numel(i.Shape) * i.DType.Size();
            t.ExternalData.Add(new Onnx.StringStringEntryProto { Key = "location", Value = "weights.pb" });
            t.ExternalData.Add(new Onnx.StringStringEntryProto { Key = "offset", Value = offset.ToString() });
            t.ExternalData.Add(new Onnx.StringStringEntryProto { Key = "length", Value = bytes.ToString() });
            offset += bytes;
            model.Graph.Initializer.Add(t);
        }
        File.WriteAllBytes(path, Google.Protobuf.MessageExtensions.ToByteArray(model));
    }
}
