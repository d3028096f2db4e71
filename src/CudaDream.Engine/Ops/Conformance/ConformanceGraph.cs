using CudaDream.Engine.Autodiff;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Tensors;

namespace CudaDream.Engine.Ops;

/// <summary>A small graph and its inputs, built for one conformance case.</summary>
public sealed record ConformanceGraph(ComputeGraph Graph, Dictionary<string, Tensor> Inputs);

/// <summary>
/// Builds the small graphs of conformance cases: inputs with deterministic random data, constants,
/// nodes whose output shapes come from the op registry, and optionally the training step (an MSE loss and
/// the backward nodes the differentiator adds, as the training graph of a real model has them).
/// </summary>
public sealed class ConformanceGraphBuilder
{
    private readonly ComputeGraph _g = new() { Source = "conformance", Opset = 17 };
    private readonly Dictionary<string, Tensor> _inputs = new(StringComparer.Ordinal);
    private readonly Random _random;
    private int _names;

    /// <param name="compute">The graph's compute type: fp32, or bf16/fp16 (the graph is rewritten by
    /// <see cref="MixedPrecision"/> before it is returned or differentiated; inputs stay fp32 host tensors).</param>
    public ConformanceGraphBuilder(int seed, DType compute = DType.F32)
    {
        _random = new Random(seed);
        Compute = compute;
    }

    public DType Compute { get; }

    private void ApplyPrecision(IReadOnlyCollection<Value> masters)
    {
        if (MixedPrecision.IsReduced(Compute)) MixedPrecision.Apply(_g, Compute, masters);
    }

    /// <summary>Uniform floats in [lo, hi).</summary>
    public Tensor Floats(int[] shape, float lo = -1, float hi = 1)
    {
        var data = new float[Shapes.Numel(shape)];
        for (int i = 0; i < data.Length; i++) data[i] = lo + (float)_random.NextDouble() * (hi - lo);
        return Tensor.FromArray(data, shape);
    }

    /// <summary>Integers in [lo, hi) of type <paramref name="type"/> (I32, I64, or Bool for 0/1).</summary>
    public Tensor Integers(DType type, int[] shape, long lo, long hi)
    {
        var data = new long[Shapes.Numel(shape)];
        for (int i = 0; i < data.Length; i++) data[i] = _random.NextInt64(lo, hi);
        return Tensor.FromArray(data, shape).To(type);
    }

    /// <summary>A graph input fed with <paramref name="data"/>.</summary>
    public Value Input(Tensor data, string? name = null)
    {
        var v = new Value(name ?? $"input{_g.Inputs.Count}", data.DType, (int[])data.Shape.Clone());
        _g.Inputs.Add(v);
        _inputs[v.Name] = data;
        return v;
    }

    public Value Input(params int[] shape) => Input(Floats(shape));

    /// <summary>A weight-like constant (trainable when passed to <see cref="Train"/>).</summary>
    public Value Const(Tensor data, string? name = null)
    {
        var v = new Value(name ?? $"const{_names++}", data.DType, (int[])data.Shape.Clone()) { Constant = data, IsWeight = true };
        _g.Weights[v.Name] = v;
        return v;
    }

    public Value ConstInts(params long[] values) => Const(Tensor.FromArray(values, values.Length));

    /// <summary>Adds a node (attributes set by <paramref name="attributes"/>) and returns its outputs.</summary>
    public Value[] Node(string op, Value?[] inputs, int outputs = 1, Action<Attributes>? attributes = null)
    {
        var outs = Enumerable.Range(0, outputs).Select(i => new Value($"{op}{_names++}_out{i}", DType.F32, null)).ToList();
        var a = new Attributes();
        attributes?.Invoke(a);
        var node = _g.AddNode(new Node(op, $"/{op}_{_names++}", inputs, outs, a));
        OpRegistry.InferShapes(node);
        return outs.ToArray();
    }

    public Value Node1(string op, Value?[] inputs, Action<Attributes>? attributes = null) => Node(op, inputs, 1, attributes)[0];

    /// <summary>The graph with <paramref name="outputs"/> as its outputs.</summary>
    public ConformanceGraph Build(params Value[] outputs)
    {
        _g.Outputs.AddRange(outputs);
        ApplyPrecision([]);
        return new ConformanceGraph(_g, _inputs);
    }

    /// <summary>
    /// The training step of MSE(<paramref name="prediction"/>, target) toward <paramref name="trainable"/>
    /// constants and <paramref name="inputGradients"/> inputs: loss, prediction and every gradient are outputs.
    /// </summary>
    public ConformanceGraph Train(Value prediction, Value[] trainable, string[]? inputGradients = null, bool perSampleWeights = false)
    {
        var wrt = trainable.Concat((inputGradients ?? []).Select(name => _g.Inputs.First(i => i.Name == name))).ToList();
        _g.Outputs.Add(prediction);
        ApplyPrecision(trainable);
        _g.Outputs.Clear();
        var target = Input(Floats(prediction.Shape!), TargetInput);
        target.DType = prediction.DType; // the host data is converted on upload
        var weights = perSampleWeights ? Input(Floats([prediction.Shape![0]], 0.5f, 2f), WeightsInput) : null;
        var loss = Node1(LossOps.MseLoss, [prediction, target, weights]);
        var grads = Differentiator.Differentiate(_g, loss, wrt);
        _g.Outputs.Add(loss);
        _g.Outputs.Add(prediction);
        foreach (var v in wrt)
        {
            if (grads[v] is not { } grad || _g.Outputs.Contains(grad)) continue;
            grad.Name = v.Name + ".grad"; // the same name in the fp32 and the reduced-precision graph
            _g.Outputs.Add(grad);
        }
        return new ConformanceGraph(_g, _inputs);
    }

    /// <summary>Names of the loss inputs of <see cref="Train"/> (as the training graph of a real model names them).</summary>
    public const string TargetInput = "target", WeightsInput = "loss_weights";
}
