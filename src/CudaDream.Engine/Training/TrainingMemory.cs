using CudaDream.Engine.Formats;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Training.Lora;

namespace CudaDream.Engine.Training;

/// <summary>Planned memory of one training step (activations, saved tensors and gradients in one arena; weights excluded).</summary>
public sealed record TrainingMemoryReport(long PeakBytes, long PeakBytesCheckpointed, int Adapters, long TrainableParameters, int RecomputedNodes)
{
    public double Saving => 1 - (double)PeakBytesCheckpointed / PeakBytes;
}

public static class TrainingMemory
{
    /// <summary>
    /// Plans a LoRA training step of a model at the given input shapes, with and without gradient
    /// checkpointing. Works without the weights file (shapes are enough).
    /// </summary>
    public static TrainingMemoryReport Estimate(string modelPath, IReadOnlyDictionary<string, int[]> shapes, int rank, IEnumerable<string> targets)
    {
        var targetSpecs = targets.ToList();
        (long peak, int adapters, long parameters, int recomputed) Plan(bool checkpointing)
        {
            var model = OnnxModel.LoadForInspection(modelPath);
            try
            {
                var g = OnnxImporter.Import(model);
                GraphPasses.Prepare(g, shapes, fuse: true);
                string component = g.Nodes.Any(n => n.Module.StartsWith("text_model", StringComparison.Ordinal)) ? LoraComponents.TextEncoder : LoraComponents.UNet;
                var chosen = LoraTargetSelector.Select(GraphLora.Targets(g, component), targetSpecs);
                if (chosen.Count == 0) throw new CudaDreamException($"{modelPath}: no module matches the LoRA targets {string.Join(", ", targetSpecs)}");
                var attached = GraphLora.Attach(g, GraphLora.Initialize(chosen, rank, rank, seed: 0));
                var trainable = attached.SelectMany(a => new[] { a.Down, a.Up }).ToList();
                var tg = TrainingGraph.Build(g, trainable, new TrainingGraphOptions { PerSampleWeights = true });
                int recomputedNodes = checkpointing ? Checkpointing.Apply(g) : 0;
                var plan = ExecutionPlan.Create(g);
                return (plan.ArenaBytes, attached.Count, trainable.Sum(v => v.Numel), recomputedNodes);
            }
            finally { model.Dispose(); }
        }
        var plain = Plan(false);
        var ckpt = Plan(true);
        return new TrainingMemoryReport(plain.peak, ckpt.peak, plain.adapters, plain.parameters, ckpt.recomputed);
    }
}
