namespace CudaDream.Engine.Training.Optimizers;

/// <summary>One trainable tensor seen as flat float32: its values and its gradient (same length), updated in place.</summary>
public sealed class OptimizerParameter
{
    public string Name { get; }
    public Memory<float> Value { get; }
    public Memory<float> Grad { get; }
    public int Length => Value.Length;

    public OptimizerParameter(string name, Memory<float> value, Memory<float> grad)
    {
        if (value.Length != grad.Length) throw new ArgumentException($"parameter '{name}': {value.Length} values but {grad.Length} gradients");
        if (string.IsNullOrEmpty(name) || name.Contains('/')) throw new ArgumentException($"parameter name '{name}' must be non-empty and contain no '/'");
        Name = name; Value = value; Grad = grad;
    }
}

/// <summary>
/// Parameters sharing hyper-parameters (torch's param_groups), e.g. UNet LoRA and text-encoder LoRA with their own
/// learning rates. <see cref="LearningRate"/> is what the next update uses; a schedule sets it from
/// <see cref="BaseLearningRate"/>. <see cref="StepCount"/> counts this group's updates (AdamW bias correction).
/// </summary>
public sealed class ParameterGroup
{
    public string Name { get; }
    public IReadOnlyList<OptimizerParameter> Parameters { get; }
    public double BaseLearningRate { get; }
    public double LearningRate { get; set; }
    public double WeightDecay { get; set; }
    public long StepCount { get; internal set; }

    public ParameterGroup(string name, IReadOnlyList<OptimizerParameter> parameters, double learningRate, double weightDecay = 0.0)
    {
        if (string.IsNullOrEmpty(name) || name.Contains('/')) throw new ArgumentException($"group name '{name}' must be non-empty and contain no '/'");
        if (!(learningRate >= 0 && double.IsFinite(learningRate))) throw new CudaDreamException($"group '{name}': learning rate must be a finite number ≥ 0, got {learningRate}");
        if (!(weightDecay >= 0 && double.IsFinite(weightDecay))) throw new CudaDreamException($"group '{name}': weight decay must be a finite number ≥ 0, got {weightDecay}");
        var dup = parameters.GroupBy(p => p.Name).FirstOrDefault(g => g.Count() > 1);
        if (dup != null) throw new ArgumentException($"group '{name}': parameter '{dup.Key}' appears twice");
        Name = name; Parameters = parameters; BaseLearningRate = learningRate; LearningRate = learningRate; WeightDecay = weightDecay;
    }
}
