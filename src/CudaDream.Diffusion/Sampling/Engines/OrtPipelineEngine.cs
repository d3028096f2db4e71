using CudaDream.Diffusion.Models;
using CudaDream.Engine;
using CudaDream.Engine.Formats;
using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Onnx;
using Tensor = CudaDream.Engine.Tensors.Tensor;

namespace CudaDream.Diffusion.Sampling.Engines;

/// <summary>
/// The pipeline on ONNX Runtime: the CUDA execution provider (UNet calls through an IoBinding; the text
/// embeddings are produced on the device and stay there for every step) or the CPU one. LoRA reaches the graphs
/// as initializer overrides (<see cref="SessionOptions.AddInitializer"/>) — the files on disk are never rewritten;
/// CLIP skip and the VAE encoder's moments output are edits of the graph, loaded from memory.
/// </summary>
public sealed class OrtPipelineEngine : IPipelineEngine
{
    private readonly PipelinePlan _plan;
    private readonly int? _cudaDevice;
    private readonly int _threads;
    private readonly Dictionary<string, OrtNetwork> _networks = new(StringComparer.Ordinal);
    private readonly OrtMemoryInfo? _deviceMemory;

    public string Description { get; }

    /// <param name="cudaDevice">CUDA device for the CUDA execution provider; null = CPU execution provider.</param>
    /// <param name="threads">Intra-op threads on the CPU; 0 = ONNX Runtime's choice.</param>
    public OrtPipelineEngine(PipelinePlan plan, int? cudaDevice, int threads = 0)
    {
        _plan = plan;
        _cudaDevice = cudaDevice;
        _threads = threads;
        if (cudaDevice is int id) _deviceMemory = new OrtMemoryInfo("Cuda", OrtAllocatorType.DeviceAllocator, id, OrtMemType.Default);
        Description = cudaDevice is int d ? $"ONNX Runtime, CUDA execution provider (device {d})" : "ONNX Runtime, CPU execution provider";
    }

    /// <summary>
    /// Null when the CUDA execution provider loads and runs here, else why not. Appending the provider and running
    /// a one-node graph is the test: <see cref="OrtEnv.GetAvailableProviders"/> lists CUDA wherever the package
    /// was built with it, whether or not the CUDA runtime, cuDNN or a device are present.
    /// </summary>
    public static string? CudaUnavailableReason(int deviceId = 0)
    {
        // A missing CUDA runtime is the expected answer on most machines: keep ONNX Runtime from logging it as an error.
        var env = OrtEnv.Instance();
        var level = env.EnvLogLevel;
        env.EnvLogLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_FATAL;
        try
        {
            using var options = new SessionOptions { LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_FATAL };
            options.AppendExecutionProvider_CUDA(deviceId);
            using var session = new InferenceSession(IdentityModel(), options);
            using var input = OrtValue.CreateTensorValueFromMemory(new[] { 1f }, [1]);
            using var runOptions = new RunOptions();
            using var output = session.Run(runOptions, ["x"], [input], ["y"]);
            return null;
        }
        catch (Exception e) when (e is OnnxRuntimeException or DllNotFoundException or EntryPointNotFoundException or TypeInitializationException)
        {
            var message = e.Message.Split('\n')[0].Trim();
            int cause = message.LastIndexOf("with error: ", StringComparison.Ordinal);
            return cause >= 0 ? message[(cause + "with error: ".Length)..] : message;
        }
        finally
        {
            env.EnvLogLevel = level;
        }
    }

    private static byte[] IdentityModel()
    {
        ValueInfoProto Port(string name) => new()
        {
            Name = name,
            Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)TensorProto.Types.DataType.Float, Shape = new TensorShapeProto { Dim = { new TensorShapeProto.Types.Dimension { DimValue = 1 } } } } },
        };
        var graph = new GraphProto { Name = "probe", Node = { new NodeProto { OpType = "Identity", Input = { "x" }, Output = { "y" } } }, Input = { Port("x") }, Output = { Port("y") } };
        return new ModelProto { IrVersion = 8, OpsetImport = { new OperatorSetIdProto { Version = 17 } }, Graph = graph }.ToByteArray();
    }

    private OrtNetwork Network(string component)
    {
        if (!_networks.TryGetValue(component, out var net))
        {
            net = OrtNetwork.Load(_plan, component, _cudaDevice, _threads);
            _networks[component] = net;
        }
        return net;
    }

    public IEncodedText EncodeText(Tensor inputIds)
    {
        var net = Network(ModelFolder.TextEncoder);
        if (_deviceMemory == null)
            return new HostText(net.Run(new() { ["input_ids"] = inputIds }, ["last_hidden_state"])["last_hidden_state"]);
        using var ids = OrtTensors.ToOrt(inputIds, net.InputType("input_ids"));
        using var binding = net.Session.CreateIoBinding();
        binding.BindInput("input_ids", ids);
        binding.BindOutputToDevice("last_hidden_state", _deviceMemory);
        using var runOptions = new RunOptions();
        net.Session.RunWithBinding(runOptions, binding);
        binding.SynchronizeBoundOutputs();
        var outputs = binding.GetOutputValues();
        return new DeviceText(outputs, inputIds.Shape[0], () => net.Run(new() { ["input_ids"] = inputIds }, ["last_hidden_state"])["last_hidden_state"]);
    }

    public IUNetSession OpenUNet(IEncodedText context, int latentHeight, int latentWidth)
    {
        var net = Network(ModelFolder.UNet);
        var type = net.InputType("encoder_hidden_states");
        OrtValue? owned = null;
        OrtValue contextValue = context switch
        {
            DeviceText d => d.Value,
            _ => owned = OrtTensors.ToOrt(context.ToTensor(), type),
        };
        return new OrtUNetSession(net, contextValue, owned, context.Batch, _plan.Folder.LatentChannels, latentHeight, latentWidth);
    }

    public Tensor Decode(Tensor latents)
    {
        var net = Network(ModelFolder.VaeDecoder);
        return net.Run(new() { ["latent_sample"] = latents }, ["sample"])["sample"];
    }

    public Tensor EncodeMoments(Tensor pixels)
    {
        var net = Network(ModelFolder.VaeEncoder);
        return net.Run(new() { ["sample"] = pixels }, [net.Session.OutputNames[0]]).Values.Single();
    }

    public void Dispose()
    {
        foreach (var n in _networks.Values) n.Dispose();
        _networks.Clear();
        _deviceMemory?.Dispose();
    }

    private sealed class HostText(Tensor hidden) : IEncodedText
    {
        public int Batch => hidden.Shape[0];
        public Tensor ToTensor() => hidden;
        public void Dispose() { }
    }

    /// <summary>Embeddings in device memory; a host copy is made by running the (small) text encoder again.</summary>
    private sealed class DeviceText(IDisposableReadOnlyCollection<OrtValue> outputs, int batch, Func<Tensor> hostCopy) : IEncodedText
    {
        public OrtValue Value => outputs[0];
        public int Batch => batch;
        public Tensor ToTensor() => hostCopy();
        public void Dispose() => outputs.Dispose();
    }
}

/// <summary>One ONNX Runtime session with the initializer overrides it reads kept alive beside it.</summary>
internal sealed class OrtNetwork : IDisposable
{
    private readonly SessionOptions _options;
    private readonly List<OrtValue> _overrides;

    public InferenceSession Session { get; }

    private OrtNetwork(InferenceSession session, SessionOptions options, List<OrtValue> overrides)
    {
        Session = session;
        _options = options;
        _overrides = overrides;
    }

    public static OrtNetwork Load(PipelinePlan plan, string component, int? cudaDevice, int threads)
    {
        var path = plan.Folder.ModelPath(component);
        if (component == ModelFolder.VaeEncoder) plan.Folder.RequireVaeEncoder();
        var options = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL, LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR };
        var overrides = new List<OrtValue>();
        try
        {
            if (threads > 0) options.IntraOpNumThreads = threads;
            if (cudaDevice is int id) options.AppendExecutionProvider_CUDA(id);
            NetworkEdits edits;
            using (var stored = new StoredWeights(path))
                edits = plan.EditsFor(component, stored.Read);
            foreach (var (name, tensor) in edits.Weights)
            {
                var value = OrtTensors.Initializer(tensor);
                overrides.Add(value);
                options.AddInitializer(name, value);
            }
            InferenceSession session;
            if (edits.ClipSkip == null && edits.Output == null && edits.Weights.Count == 0) session = new InferenceSession(path, options);
            else
            {
                // Edited graphs load from memory; their external weights stay where they are.
                options.AddSessionConfigEntry("session.model_external_initializers_file_folder_path", Path.GetDirectoryName(path)!);
                session = new InferenceSession(EditedModel(path, edits), options);
            }
            return new OrtNetwork(session, options, overrides);
        }
        catch (OnnxRuntimeException e)
        {
            foreach (var v in overrides) v.Dispose();
            options.Dispose();
            throw new CudaDreamException($"{path}: ONNX Runtime could not load the graph: {e.Message.Split('\n')[0]}");
        }
        catch
        {
            foreach (var v in overrides) v.Dispose();
            options.Dispose();
            throw;
        }
    }

    private static byte[] EditedModel(string path, NetworkEdits edits)
    {
        using var model = OnnxModel.Load(path, loadExternalData: false);
        var graph = model.Proto.Graph;
        if (edits.ClipSkip is { } skip)
        {
            foreach (var (nodeOutput, index) in skip.Sites)
            {
                var node = graph.Node.First(n => n.Output.Count > 0 && n.Output[0] == nodeOutput);
                node.Input[index] = skip.HiddenState;
            }
        }
        // Overridden weights become graph inputs as well: ONNX Runtime treats such initializers as overridable and
        // neither constant-folds them (e.g. Transpose(W) in CudaDream-built graphs) nor pre-transforms them (NCHWc
        // convolution weights) from the file's values before the override takes their place.
        var declared = graph.Input.Select(i => i.Name).ToHashSet(StringComparer.Ordinal);
        foreach (var init in graph.Initializer)
        {
            if (!edits.Weights.ContainsKey(init.Name) || declared.Contains(init.Name)) continue;
            var shape = new TensorShapeProto();
            foreach (var d in init.Dims) shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimValue = d });
            graph.Input.Add(new ValueInfoProto { Name = init.Name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = init.DataType, Shape = shape } } });
        }
        if (edits.Output is { } output)
        {
            var elemType = graph.Output[0].Type.TensorType.ElemType;
            graph.Output.Clear();
            graph.Output.Add(new ValueInfoProto { Name = output, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = elemType } } });
        }
        return model.Proto.ToByteArray();
    }

    public TensorElementType InputType(string name) => Session.InputMetadata[name].ElementDataType;
    public TensorElementType OutputType(string name) => Session.OutputMetadata[name].ElementDataType;

    public Dictionary<string, Tensor> Run(Dictionary<string, Tensor> inputs, string[] outputs)
    {
        var names = inputs.Keys.ToArray();
        var values = names.Select(n => OrtTensors.ToOrt(inputs[n], InputType(n))).ToArray();
        try
        {
            using var runOptions = new RunOptions();
            using var results = Session.Run(runOptions, names, values, outputs);
            var map = new Dictionary<string, Tensor>(StringComparer.Ordinal);
            for (int i = 0; i < outputs.Length; i++) map[outputs[i]] = OrtTensors.ToFloatTensor(results[i]);
            return map;
        }
        finally
        {
            foreach (var v in values) v.Dispose();
        }
    }

    public void Dispose()
    {
        Session.Dispose();
        foreach (var v in _overrides) v.Dispose();
        _options.Dispose();
    }

    /// <summary>Base weights for LoRA merging, read through the engine's bounds-checked, memory-mapped ONNX reader (opened only when asked).</summary>
    private sealed class StoredWeights(string path) : IDisposable
    {
        private OnnxModel? _model;

        public Tensor Read(string name)
        {
            _model ??= OnnxModel.Load(path);
            return _model.Initializers.TryGetValue(name, out var t) ? t : throw new InvalidFileException(path, $"initializer '{name}' has no data");
        }

        public void Dispose() => _model?.Dispose();
    }
}

/// <summary>UNet calls through one IoBinding: the conditioning is bound once, sample and timestep buffers are rewritten per call.</summary>
internal sealed class OrtUNetSession : IUNetSession
{
    private readonly OrtNetwork _net;
    private readonly OrtIoBinding _binding;
    private readonly OrtValue? _ownedContext;
    private readonly OrtBuffer _sample, _timestep, _output;
    private readonly RunOptions _runOptions = new();

    public OrtUNetSession(OrtNetwork net, OrtValue context, OrtValue? ownedContext, int batch, int channels, int height, int width)
    {
        _net = net;
        _ownedContext = ownedContext;
        long[] shape = [batch, channels, height, width];
        _sample = new OrtBuffer(net.InputType("sample"), shape);
        // Exports take the timestep per batch row ([B]) or as one scalar.
        int timestepRank = net.Session.InputMetadata["timestep"].Dimensions.Length;
        _timestep = new OrtBuffer(net.InputType("timestep"), timestepRank == 0 ? [] : [batch]);
        _output = new OrtBuffer(net.OutputType("out_sample"), shape);
        _binding = net.Session.CreateIoBinding();
        _binding.BindInput("encoder_hidden_states", context);
        _binding.BindInput("sample", _sample.Value);
        _binding.BindInput("timestep", _timestep.Value);
        _binding.BindOutput("out_sample", _output.Value);
    }

    public void Predict(ReadOnlySpan<float> sample, double timestep, Span<float> prediction)
    {
        _sample.Write(sample);
        _timestep.Fill((float)timestep);
        _binding.SynchronizeBoundInputs();
        _net.Session.RunWithBinding(_runOptions, _binding);
        _binding.SynchronizeBoundOutputs();
        _output.Read(prediction);
    }

    public void Dispose()
    {
        _binding.Dispose();
        _runOptions.Dispose();
        _sample.Dispose();
        _timestep.Dispose();
        _output.Dispose();
        _ownedContext?.Dispose();
    }
}
