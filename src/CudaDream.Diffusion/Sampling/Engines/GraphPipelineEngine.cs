using CudaDream.Diffusion.Models;
using CudaDream.Engine;
using CudaDream.Engine.Backends.Device;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Tensors;

namespace CudaDream.Diffusion.Sampling.Engines;

/// <summary>Where CudaDream's engine executes a specialised graph: the CPU, or a kernel device (<see cref="DeviceGraphBackend"/>).</summary>
public interface IGraphBackend
{
    /// <summary>E.g. "CPU".</summary>
    string Name { get; }

    /// <summary>Specialises <paramref name="graph"/> (imported, edits applied; the runner owns it) to the input shapes and prepares it to run.</summary>
    IGraphRunner Create(ComputeGraph graph, IReadOnlyDictionary<string, int[]> inputShapes);
}

/// <summary>A graph specialised to fixed input shapes.</summary>
public interface IGraphRunner : IDisposable
{
    /// <summary>Graph outputs by name.</summary>
    IReadOnlyDictionary<string, Tensor> Run(IReadOnlyDictionary<string, Tensor> inputs);
}

/// <summary>
/// CudaDream's engine on a kernel device (cuda, or emu for checking), in <paramref name="compute"/> precision: each graph in
/// <paramref name="context"/> when given (a training run's: its weights resident once for both), else on a device of its own.
/// </summary>
public sealed class DeviceGraphBackend(ExecutionBackend backend, DType compute = DType.F32, DeviceContext? context = null) : IGraphBackend
{
    public string Name => $"{context?.Device.Name ?? backend.Name}{(compute == DType.F32 ? "" : " " + ParseDType.Name(compute))}";

    public IGraphRunner Create(ComputeGraph graph, IReadOnlyDictionary<string, int[]> inputShapes) =>
        new SessionRunner(GraphSession.Create(graph, inputShapes, new GraphSessionOptions { Backend = backend, Compute = compute, Context = context }));

    private sealed class SessionRunner(GraphSession session) : IGraphRunner
    {
        public IReadOnlyDictionary<string, Tensor> Run(IReadOnlyDictionary<string, Tensor> inputs) => session.Run(inputs);
        public void Dispose() => session.Dispose();
    }
}

/// <summary>The engine's CPU backend (<see cref="GraphSession"/>): the reference every other backend is checked against.</summary>
public sealed class CpuGraphBackend : IGraphBackend
{
    public string Name => "CPU";

    public IGraphRunner Create(ComputeGraph graph, IReadOnlyDictionary<string, int[]> inputShapes) =>
        new SessionRunner(GraphSession.Create(graph, inputShapes));

    private sealed class SessionRunner(GraphSession session) : IGraphRunner
    {
        public IReadOnlyDictionary<string, Tensor> Run(IReadOnlyDictionary<string, Tensor> inputs) => session.Run(inputs);
        public void Dispose() => session.Dispose();
    }
}

/// <summary>
/// The pipeline on CudaDream's own engine: each network is imported, edited (LoRA-merged weights replace the
/// weight values' constants with managed copies — the memory-mapped originals are never written), specialised to
/// the shapes of the call and run on an <see cref="IGraphBackend"/>. Specialised graphs are kept per shape for
/// the round.
/// </summary>
public sealed class GraphPipelineEngine : IPipelineEngine
{
    private readonly PipelinePlan _plan;
    private readonly IGraphBackend _backend;
    private readonly Dictionary<string, IGraphRunner> _runners = new(StringComparer.Ordinal);

    public string Description => $"CudaDream engine, {_backend.Name} backend";

    public GraphPipelineEngine(PipelinePlan plan, IGraphBackend backend)
    {
        _plan = plan;
        _backend = backend;
    }

    private IGraphRunner Runner(string component, Dictionary<string, int[]> shapes)
    {
        var key = component + ":" + string.Join(";", shapes.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => kv.Key + Shapes.Format(kv.Value)));
        if (_runners.TryGetValue(key, out var runner)) return runner;
        if (component == ModelFolder.VaeEncoder) _plan.Folder.RequireVaeEncoder();
        var path = _plan.Folder.ModelPath(component);
        var graph = OnnxImporter.Load(path);
        try
        {
            var edits = _plan.EditsFor(component, name => graph.Weights.TryGetValue(name, out var w) && w.Constant != null
                ? w.Constant : throw new InvalidFileException(path, $"initializer '{name}' has no data"));
            Apply(graph, edits);
            runner = _backend.Create(graph, shapes);
        }
        catch
        {
            foreach (var o in graph.Owners) o.Dispose();
            throw;
        }
        _runners[key] = runner;
        return runner;
    }

    internal static void Apply(ComputeGraph g, NetworkEdits edits)
    {
        foreach (var (name, merged) in edits.Weights)
        {
            var w = g.Weights[name];
            if (w.DType != merged.DType || w.Shape == null || !Shapes.Equal(w.Shape, merged.Shape))
                throw new CudaDreamException($"{g.Source}: merged weight '{name}' is {merged}, the graph holds {w.DType}{(w.Shape == null ? "" : Shapes.Format(w.Shape))}");
            w.Constant = merged;
        }
        if (edits.ClipSkip is { } skip)
        {
            var hidden = g.FindValue(skip.HiddenState) ?? throw new CudaDreamException($"{g.Source}: no value '{skip.HiddenState}' for CLIP skip");
            foreach (var (nodeOutput, index) in skip.Sites)
            {
                var node = g.Nodes.First(n => n.Outputs.Count > 0 && n.Outputs[0].Name == nodeOutput);
                node.Inputs[index]?.Consumers.Remove(node);
                node.Inputs[index] = hidden;
                hidden.Consumers.Add(node);
            }
        }
        if (edits.Output is { } output)
        {
            var v = g.FindValue(output) ?? throw new CudaDreamException($"{g.Source}: no value '{output}'");
            g.Outputs.Clear();
            g.Outputs.Add(v);
        }
    }

    private static Tensor Single(IReadOnlyDictionary<string, Tensor> outputs, string name) =>
        (outputs.TryGetValue(name, out var t) ? t : outputs.Values.First()).To(DType.F32);

    private Tensor RunOne(string component, string inputName, Tensor input, string outputName)
    {
        var runner = Runner(component, new() { [inputName] = input.Shape });
        var graphInput = InputType(component, inputName);
        return Single(runner.Run(new Dictionary<string, Tensor> { [inputName] = input.DType == graphInput ? input : input.To(graphInput) }), outputName);
    }

    private DType InputType(string component, string name) => Graph(component).Input(name)?.DType ?? DType.F32;

    private ModelFolderGraph Graph(string component) => component switch
    {
        ModelFolder.TextEncoder => _plan.Folder.TextEncoderGraph,
        ModelFolder.UNet => _plan.Folder.UNetGraph,
        ModelFolder.VaeDecoder => _plan.Folder.VaeDecoderGraph,
        _ => _plan.Folder.RequireVaeEncoder(),
    };

    public IEncodedText EncodeText(Tensor inputIds) =>
        new HostText(RunOne(ModelFolder.TextEncoder, "input_ids", inputIds, "last_hidden_state"));

    public IUNetSession OpenUNet(IEncodedText context, int latentHeight, int latentWidth)
    {
        var hidden = context.ToTensor();
        int batch = hidden.Shape[0];
        int[] sampleShape = [batch, _plan.Folder.LatentChannels, latentHeight, latentWidth];
        var timestepPort = _plan.Folder.UNetGraph.Input("timestep")!;
        int[] timestepShape = timestepPort.Dims.Length == 0 ? [] : [batch];
        var runner = Runner(ModelFolder.UNet, new()
        {
            ["sample"] = sampleShape,
            ["timestep"] = timestepShape,
            ["encoder_hidden_states"] = hidden.Shape,
        });
        var contextInput = hidden.To(InputType(ModelFolder.UNet, "encoder_hidden_states"));
        return new UNetRunner(runner, contextInput, sampleShape, timestepShape, InputType(ModelFolder.UNet, "sample"), timestepPort.DType);
    }

    public Tensor Decode(Tensor latents) => RunOne(ModelFolder.VaeDecoder, "latent_sample", latents, "sample");

    public Tensor EncodeMoments(Tensor pixels) => RunOne(ModelFolder.VaeEncoder, "sample", pixels, "");

    public void Dispose()
    {
        foreach (var r in _runners.Values) r.Dispose();
        _runners.Clear();
    }

    private sealed class HostText(Tensor hidden) : IEncodedText
    {
        public int Batch => hidden.Shape[0];
        public Tensor ToTensor() => hidden;
        public void Dispose() { }
    }

    private sealed class UNetRunner(IGraphRunner runner, Tensor context, int[] sampleShape, int[] timestepShape, DType sampleType, DType timestepType) : IUNetSession
    {
        public void Predict(ReadOnlySpan<float> sample, double timestep, Span<float> prediction)
        {
            var t = new float[Math.Max(1, timestepShape.Length == 0 ? 1 : timestepShape[0])];
            Array.Fill(t, (float)timestep);
            var inputs = new Dictionary<string, Tensor>
            {
                ["sample"] = Tensor.FromArray(sample.ToArray(), sampleShape).To(sampleType),
                ["timestep"] = Tensor.FromArray(t, timestepShape).To(timestepType),
                ["encoder_hidden_states"] = context,
            };
            var output = Single(runner.Run(inputs), "out_sample");
            output.ReadOnlySpan<float>().CopyTo(prediction);
        }

        public void Dispose() { }
    }
}
