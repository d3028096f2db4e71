using CudaDream.Engine;
using CudaDream.Engine.Backends.Device;
using CudaDream.Engine.Formats;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Tensors;
using CudaDream.Engine.Training.Lora;

namespace CudaDream.Engine.Training;

public sealed record GraphGradientRequest
{
    public required string Model { get; init; }
    /// <summary>Tensors by name: graph inputs, the target, and anything else (ignored).</summary>
    public required IReadOnlyDictionary<string, Tensor> Tensors { get; init; }
    public required string Target { get; init; }
    /// <summary>A LoRA file (CudaDream, kohya or diffusers keys) to attach; may be the same file as the inputs.</summary>
    public string? Lora { get; init; }
    /// <summary>What to differentiate: "lora", "inputs", input names, or globs over weight names.</summary>
    public IReadOnlyList<string> Wrt { get; init; } = new[] { "lora" };
    public bool Fuse { get; init; } = true;
    public bool GradientCheckpointing { get; init; }
    /// <summary>Where the step runs: cpu (default), emu[75|80|90] or cuda[:N].</summary>
    public ExecutionBackend Backend { get; init; } = ExecutionBackend.Cpu;
    /// <summary>fp32, or bf16/fp16 mixed precision on a kernel device (the differentiated tensors stay fp32 masters).</summary>
    public DType Compute { get; init; } = DType.F32;
}

/// <summary>
/// <c>cudadream graph grad</c> as a library call: the gradient of MSE(graph output, target) with respect to
/// LoRA tensors, graph inputs or selected weights. The result holds <c>loss</c>, the graph output,
/// <c>&lt;input&gt;.grad</c>, <c>&lt;module&gt;.lora_down.weight.grad</c> / <c>.lora_up.weight.grad</c> and <c>&lt;weight&gt;.grad</c>.
/// </summary>
public static class GraphGradient
{
    private static readonly string[] LoraSuffixes = { ".lora_down.weight", ".lora_up.weight", ".lora.down.weight", ".lora.up.weight", ".lora_A.weight", ".lora_B.weight", ".alpha" };

    private static Tensor Unscaled(Tensor gradient, double scale)
    {
        var g = Float32(gradient.Clone());
        if (scale == 1) return g;
        var s = g.Span<float>();
        for (int i = 0; i < s.Length; i++) s[i] = (float)(s[i] / scale);
        return g;
    }

    /// <summary>Reduced-precision results are written as fp32, like the references they are compared with.</summary>
    private static Tensor Float32(Tensor t) => MixedPrecision.IsReduced(t.DType) ? t.To(DType.F32) : t;

    public static Dictionary<string, Tensor> Run(GraphGradientRequest r)
    {
        var g = OnnxImporter.Load(r.Model);
        var shapes = new Dictionary<string, int[]>();
        var missing = g.Inputs.Where(i => !r.Tensors.ContainsKey(i.Name)).Select(i => i.Name).ToList();
        if (missing.Count > 0) throw new CudaDreamException($"missing graph input(s) {string.Join(", ", missing)}");
        foreach (var i in g.Inputs) shapes[i.Name] = r.Tensors[i.Name].Shape;
        if (!r.Tensors.TryGetValue(r.Target, out var target)) throw new CudaDreamException($"no tensor named '{r.Target}' for --target");
        GraphPasses.Prepare(g, shapes, r.Fuse);

        var attached = new List<AttachedLora>();
        if (r.Lora != null)
        {
            string component = g.Nodes.Any(n => n.Module.StartsWith("text_model", StringComparison.Ordinal)) ? LoraComponents.TextEncoder : LoraComponents.UNet;
            var targets = GraphLora.Targets(g, component);
            var tensors = SafetensorsFile.ReadAll(r.Lora);
            var loaded = LoraFile.Resolve(r.Lora, tensors, targets);
            // The file may carry other tensors (inputs, references) and the other network's adapters (a kohya file holds
            // lora_unet_* and lora_te_*): only LoRA-shaped keys meant for this network must match a module.
            string other = component == LoraComponents.UNet ? LoraComponents.TextEncoder : LoraComponents.UNet;
            bool ForOtherNetwork(string key) => key.StartsWith(LoraFile.KohyaName(other, ""), StringComparison.Ordinal)
                || key.StartsWith(other + ".", StringComparison.Ordinal) || key.StartsWith($"base_model.model.{other}.", StringComparison.Ordinal);
            var stray = loaded.UnmatchedKeys.Where(k => LoraSuffixes.Any(s => k.EndsWith(s, StringComparison.Ordinal)) && !ForOtherNetwork(k)).ToList();
            if (stray.Count > 0) throw new CudaDreamException($"{r.Lora}: LoRA key '{stray[0]}' matches no module of {r.Model}{(stray.Count > 1 ? $" (and {stray.Count - 1} more)" : "")}");
            if (loaded.Adapters.Count == 0) throw new CudaDreamException($"{r.Lora}: no LoRA tensors found");
            attached = GraphLora.Attach(g, loaded.Adapters);
        }

        var trainable = new List<Value>();
        var inputGrads = new List<string>();
        foreach (var w in r.Wrt)
        {
            if (w == "lora")
            {
                if (attached.Count == 0) throw new CudaDreamException("--wrt lora needs --lora");
                trainable.AddRange(attached.SelectMany(a => new[] { a.Down, a.Up }));
            }
            else if (w == "inputs") inputGrads.AddRange(g.Inputs.Where(i => i.DType.IsFloat()).Select(i => i.Name));
            else if (g.Inputs.Any(i => i.Name == w)) inputGrads.Add(w);
            else
            {
                var regex = LoraTargetSelector.Glob(w);
                var matched = g.Weights.Values.Where(v => regex.IsMatch(v.Name) && v.Consumers.Count > 0).ToList();
                if (matched.Count == 0) throw new CudaDreamException($"--wrt '{w}' matches no input or weight of {r.Model}");
                trainable.AddRange(matched);
            }
        }
        GraphPasses.ApplyPrecision(g, r.Compute, r.Backend, trainable.Distinct().ToList());
        var tg = TrainingGraph.Build(g, trainable.Distinct().ToList(), new TrainingGraphOptions
        {
            InputGradients = inputGrads.Distinct().ToList(),
            GradientCheckpointing = r.GradientCheckpointing,
            LossScale = r.Compute == DType.F16,
        });
        if (!Shapes.Equal(target.Shape, tg.Prediction.Shape!))
            throw new CudaDreamException($"--target '{r.Target}' has shape {Shapes.Format(target.Shape)}, the graph output '{tg.Prediction.Name}' is {Shapes.Format(tg.Prediction.Shape!)}");
        using var session = new TrainingSession(tg, r.Backend);
        var feed = new Dictionary<string, Tensor>(r.Tensors.Where(kv => g.Inputs.Any(i => i.Name == kv.Key)).ToDictionary(kv => kv.Key, kv => kv.Value))
        {
            [TrainingGraph.TargetInput] = target,
        };
        // fp16: the backward is seeded with a loss scale so small gradients do not flush to zero; the largest scale whose
        // gradients stay finite is used (GradScaler's search, from its initial 2^16) and divided back out.
        double scale = r.Compute == DType.F16 ? LossScaler.InitialScale : 1;
        while (true)
        {
            if (r.Compute == DType.F16) feed[TrainingGraph.LossScaleInput] = Tensor.FromArray([(float)scale], 1);
            var step = session.Run(feed);
            var result = new Dictionary<string, Tensor>(StringComparer.Ordinal)
            {
                [TrainingGraph.LossOutput] = Tensor.FromArray(new[] { (float)step.Loss }, 1),
                [tg.Prediction.Name] = Float32(step.Prediction),
            };
            foreach (var p in tg.Parameters) result[p.Name + ".grad"] = Unscaled(session.Gradient(p), scale);
            foreach (var name in tg.InputGradients.Keys) result[name + ".grad"] = Unscaled(session.InputGradient(name), scale);
            bool finite = result.Where(kv => kv.Key.EndsWith(".grad", StringComparison.Ordinal)).All(kv => kv.Value.ToFloat64Array().All(double.IsFinite));
            if (finite || scale <= 1) return result;
            scale *= LossScaler.BackoffFactor;
        }
    }
}
