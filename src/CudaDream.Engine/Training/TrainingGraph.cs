using CudaDream.Engine.Autodiff;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Ops;
using CudaDream.Engine.Tensors;

namespace CudaDream.Engine.Training;

/// <summary>A tensor the optimizer updates: its value (a weight whose Constant is a managed buffer) and its gradient value.</summary>
public sealed record TrainableParameter(string Name, Value Value, Value Gradient);

public sealed record TrainingGraphOptions
{
    /// <summary>The graph output that is compared with the target (default: the first output).</summary>
    public string? Prediction { get; init; }
    /// <summary>Add a per-sample loss weight input <c>loss_weights</c> [B] (prior preservation, Min-SNR).</summary>
    public bool PerSampleWeights { get; init; }
    /// <summary>
    /// Add an element-wise loss mask input <c>loss_mask</c> shaped like the prediction: the loss compares
    /// prediction·mask with target·mask (masked loss; where the mask is 0 the prediction gets exactly zero gradient).
    /// </summary>
    public bool LossMask { get; init; }
    /// <summary>Graph inputs whose gradients are wanted too (e.g. <c>sample</c>).</summary>
    public IReadOnlyCollection<string> InputGradients { get; init; } = Array.Empty<string>();
    /// <summary>Recompute activations inside each top-level module in the backward pass instead of keeping them.</summary>
    public bool GradientCheckpointing { get; init; }
    /// <summary>
    /// Backpropagate a given gradient instead of an MSE: input <c>upstream</c> (shaped like the prediction) and
    /// loss = Σ prediction·upstream, so d loss / d prediction = upstream exactly. This chains two graphs, e.g. the
    /// UNet's gradient toward <c>encoder_hidden_states</c> into the text encoder.
    /// </summary>
    public bool UpstreamGradient { get; init; }
    /// <summary>
    /// Add an input <c>loss_scale</c> [1] (fp32) that seeds the backward instead of 1, so every gradient comes out scaled by it:
    /// fp16 training's dynamic loss scaling (Micikevicius et al. 2018, §3.2), which keeps small gradients above fp16's
    /// smallest normal number. The optimizer divides them back.
    /// </summary>
    public bool LossScale { get; init; }
}

/// <summary>
/// One training step as a graph: the (specialised, fused) forward, an MSE loss against the input
/// <c>target</c>, and the backward nodes for every trainable parameter — planned and executed like any
/// other graph. Inputs: the forward's inputs, <c>target</c>, and <c>loss_weights</c> when asked for.
/// Outputs: <c>loss</c>, the prediction, and the gradients.
/// </summary>
public sealed class TrainingGraph
{
    public const string TargetInput = "target";
    public const string WeightsInput = "loss_weights";
    public const string LossMaskInput = "loss_mask";
    public const string UpstreamInput = "upstream";
    public const string LossOutput = "loss";
    public const string LossScaleInput = "loss_scale";

    public ComputeGraph Graph { get; }
    public Value Loss { get; }
    public Value Prediction { get; }
    public IReadOnlyList<TrainableParameter> Parameters { get; }
    public IReadOnlyDictionary<string, Value> InputGradients { get; }

    private TrainingGraph(ComputeGraph g, Value loss, Value prediction, List<TrainableParameter> parameters, Dictionary<string, Value> inputGrads)
    {
        Graph = g;
        Loss = loss;
        Prediction = prediction;
        Parameters = parameters;
        InputGradients = inputGrads;
    }

    private static void AddMseLoss(ComputeGraph g, Value prediction, Value loss, bool perSampleWeights, bool lossMask)
    {
        var target = new Value(TargetInput, prediction.DType, (int[])prediction.Shape!.Clone());
        g.Inputs.Add(target);
        if (lossMask)
        {
            var mask = new Value(LossMaskInput, prediction.DType, (int[])prediction.Shape!.Clone());
            g.Inputs.Add(mask);
            prediction = Multiply(g, prediction, mask, "/loss/MaskPrediction");
            target = Multiply(g, target, mask, "/loss/MaskTarget");
        }
        Value? weights = null;
        if (perSampleWeights)
        {
            // Loss weights are read in fp32 whatever the prediction's type (OpDef.Float32Inputs of MseLoss).
            weights = new Value(WeightsInput, CudaDream.Engine.Graph.Infer.AccumulatorType(prediction.DType), new[] { prediction.Shape![0] });
            g.Inputs.Add(weights);
        }
        var lossNode = new Node(LossOps.MseLoss, "/loss/MseLoss", new[] { prediction, target, weights }, new[] { loss });
        OpRegistry.InferShapes(lossNode);
        g.AddNode(lossNode);
    }

    private static Value Multiply(ComputeGraph g, Value a, Value b, string name)
    {
        var product = new Value(name + "_output_0", a.DType, null);
        var mul = new Node("Mul", name, new[] { a, b }, new[] { product });
        OpRegistry.InferShapes(mul);
        g.AddNode(mul);
        return product;
    }

    private static void AddUpstreamLoss(ComputeGraph g, Value prediction, Value loss)
    {
        var upstream = new Value(UpstreamInput, prediction.DType, (int[])prediction.Shape!.Clone());
        g.Inputs.Add(upstream);
        var product = new Value("/loss/Mul_output_0", prediction.DType, null);
        var mul = new Node("Mul", "/loss/Mul", new[] { prediction, upstream }, new[] { product });
        OpRegistry.InferShapes(mul);
        g.AddNode(mul);
        // keepdims=1 over every axis then a reshape to [1], so the loss has the shape the MSE loss has.
        var summed = new Value("/loss/ReduceSum_output_0", prediction.DType, null);
        var sum = new Node("ReduceSum", "/loss/ReduceSum", new[] { product }, new[] { summed }, new Attributes().Set("keepdims", 0L));
        OpRegistry.InferShapes(sum);
        g.AddNode(sum);
        var shape = new Value("/loss/shape", DType.I64, new[] { 1 }) { Constant = Tensor.FromArray(new long[] { 1 }, 1) };
        var reshape = new Node("Reshape", "/loss/Reshape", new[] { summed, shape }, new[] { loss });
        OpRegistry.InferShapes(reshape);
        g.AddNode(reshape);
    }

    /// <summary>Turns a specialised forward graph into a training-step graph (in place). <paramref name="trainable"/> are weight values.</summary>
    public static TrainingGraph Build(ComputeGraph g, IReadOnlyList<Value> trainable, TrainingGraphOptions? options = null)
    {
        options ??= new TrainingGraphOptions();
        var prediction = options.Prediction == null ? g.Outputs[0] : g.Outputs.FirstOrDefault(o => o.Name == options.Prediction)
            ?? throw new CudaDreamException($"{g.Source}: the graph has no output named '{options.Prediction}'");
        foreach (var p in trainable)
            if (p.Constant == null || p.DType is not (DType.F32 or DType.F64))
                throw new CudaDreamException($"parameter '{p.Name}' cannot be trained: it is not a loaded floating-point weight");

        var loss = new Value(LossOutput, prediction.DType, new[] { 1 });
        if (options.UpstreamGradient) AddUpstreamLoss(g, prediction, loss);
        else AddMseLoss(g, prediction, loss, options.PerSampleWeights, options.LossMask);

        var inputs = new List<Value>();
        foreach (var name in options.InputGradients)
            inputs.Add(g.Inputs.FirstOrDefault(i => i.Name == name) ?? throw new CudaDreamException($"{g.Source}: the graph has no input named '{name}'"));
        var wrt = trainable.Concat(inputs).Distinct().ToList();
        Value? seed = null;
        if (options.LossScale)
        {
            seed = new Value(LossScaleInput, loss.DType, [1]);
            g.Inputs.Add(seed);
        }
        var grads = Differentiator.Differentiate(g, loss, wrt, seed);

        var parameters = new List<TrainableParameter>();
        foreach (var p in trainable)
        {
            var grad = grads[p] ?? throw new CudaDreamException($"parameter '{p.Name}' does not influence the loss");
            grad.Name = p.Name + ".grad";
            parameters.Add(new TrainableParameter(p.Name, p, grad));
        }
        var inputGrads = new Dictionary<string, Value>();
        foreach (var i in inputs)
        {
            var grad = grads[i] ?? throw new CudaDreamException($"input '{i.Name}' does not influence the loss");
            grad.Name = i.Name + ".grad";
            inputGrads[i.Name] = grad;
        }
        g.Outputs.Clear();
        g.Outputs.Add(loss);
        g.Outputs.Add(prediction);
        foreach (var p in parameters) if (!g.Outputs.Contains(p.Gradient)) g.Outputs.Add(p.Gradient);
        foreach (var v in inputGrads.Values) if (!g.Outputs.Contains(v)) g.Outputs.Add(v);
        if (options.GradientCheckpointing) Checkpointing.Apply(g);
        return new TrainingGraph(g, loss, prediction, parameters, inputGrads);
    }
}
