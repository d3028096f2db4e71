using CudaDream.Engine.Tensors;
using Google.Protobuf;
using Onnx;

namespace CudaDream.Engine.Formats;

/// <summary>
/// A graph weight as the writer stores it: its name, element type and shape, and its values.
/// <see cref="Data"/> may hold another float type than <see cref="DType"/> (e.g. a view of an fp16
/// checkpoint for an fp32 graph): it is converted one tensor at a time while writing, so a model is
/// never held twice in memory. <see cref="Data"/> is null for a shape-only graph (structure checks);
/// such a graph can be inspected but not written.
/// </summary>
public sealed record OnnxInitializer(string Name, DType DType, int[] Shape, Tensor? Data)
{
    public long ByteLength => Shapes.Numel(Shape) * DType.Size();
}

/// <summary>How <see cref="OnnxWriter"/> lays out the weights.</summary>
public sealed record OnnxWriteOptions
{
    /// <summary>true: always use an external weights file; false: never; null: only when the weights exceed protobuf's 2 GB limit.</summary>
    public bool? ExternalData { get; init; }

    /// <summary>The external weights file, beside model.onnx (the diffusers exporter's name).</summary>
    public string ExternalDataFile { get; init; } = "weights.pb";

    /// <summary>Tensors smaller than this stay inline even in external-data mode, as onnx.save does.</summary>
    public long InlineBelowBytes { get; init; } = 1024;
}

/// <summary>
/// Writes ONNX models: a <see cref="ModelProto"/> whose graph holds the nodes, plus the initializers
/// given separately so that multi-gigabyte weights never have to sit in one protobuf message.
/// With external data the weights go to one file (ONNX external-data entries: location, offset,
/// length; offsets aligned to 64 bytes). Each file is written atomically.
/// </summary>
public static class OnnxWriter
{
    /// <summary>protobuf refuses messages of 2 GiB or more; stay well below it for the graph itself.</summary>
    public const long InlineLimitBytes = 2_000_000_000;

    private const int Alignment = 64;

    public static void Write(string modelPath, ModelProto model, IReadOnlyList<OnnxInitializer> initializers, OnnxWriteOptions? options = null)
    {
        options ??= new OnnxWriteOptions();
        foreach (var init in initializers)
            if (init.Data == null)
                throw new ArgumentException($"initializer '{init.Name}' has no data: a shape-only graph cannot be written");

        long total = initializers.Sum(i => i.ByteLength);
        bool external = options.ExternalData ?? total >= InlineLimitBytes;
        var output = model.Clone();
        output.Graph.Initializer.Clear();

        var externalTensors = new List<OnnxInitializer>();
        long offset = 0;
        foreach (var init in initializers)
        {
            var proto = new TensorProto { Name = init.Name, DataType = init.DType.ToOnnx() };
            proto.Dims.AddRange(init.Shape.Select(d => (long)d));
            if (!external || init.ByteLength < options.InlineBelowBytes)
            {
                proto.RawData = ByteString.CopyFrom(Stored(init).Data.Span);
            }
            else
            {
                offset = (offset + Alignment - 1) / Alignment * Alignment;
                proto.DataLocation = TensorProto.Types.DataLocation.External;
                proto.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = options.ExternalDataFile });
                proto.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = offset.ToString() });
                proto.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = init.ByteLength.ToString() });
                externalTensors.Add(init);
                offset += init.ByteLength;
            }
            output.Graph.Initializer.Add(proto);
        }

        if (output.CalculateSize() >= InlineLimitBytes)
            throw new CudaDreamException($"{modelPath}: the graph is {output.CalculateSize()} bytes inline, above protobuf's 2 GB limit; write it with external data");

        var dir = Path.GetDirectoryName(Path.GetFullPath(modelPath))!;
        if (externalTensors.Count > 0)
            AtomicFile.Write(Path.Combine(dir, options.ExternalDataFile), s => WriteExternal(s, externalTensors));
        AtomicFile.Write(modelPath, s => output.WriteTo(s));
    }

    private static void WriteExternal(Stream s, List<OnnxInitializer> tensors)
    {
        long position = 0;
        Span<byte> padding = stackalloc byte[Alignment];
        padding.Clear();
        foreach (var t in tensors)
        {
            long aligned = (position + Alignment - 1) / Alignment * Alignment;
            s.Write(padding[..(int)(aligned - position)]);
            s.Write(Stored(t).Data.Span);
            position = aligned + t.ByteLength;
        }
    }

    /// <summary>The initializer's values in its stored element type.</summary>
    private static Tensor Stored(OnnxInitializer init) => init.Data!.DType == init.DType ? init.Data : init.Data.To(init.DType);

    /// <summary>An empty model with the given opset (default domain) and producer, ready for a graph.</summary>
    public static ModelProto NewModel(GraphProto graph, int opset, string producer = "CudaDream")
    {
        var m = new ModelProto
        {
            IrVersion = opset >= 17 ? 8 : 7,
            ProducerName = producer,
            ProducerVersion = typeof(OnnxWriter).Assembly.GetName().Version?.ToString() ?? "0",
            Graph = graph,
        };
        m.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = opset });
        return m;
    }
}
