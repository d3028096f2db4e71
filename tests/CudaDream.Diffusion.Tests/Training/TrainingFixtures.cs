using CudaDream.Diffusion.Training;
using CudaDream.TestSupport;

namespace CudaDream.Diffusion.Tests.Training;

/// <summary>Small DreamBooth runs on the sd-tiny fixture model with the example concepts of models/tiny-sd.</summary>
internal static class TrainingFixtures
{
    public static string Concepts(string name) => Path.Combine(Fixtures.RepoRoot, "models", "tiny-sd", "concepts", name);

    public static ConceptOptions Tiles(int classImagesPer = 1) => new()
    {
        InstanceDataDir = Concepts("orange-tiles"), InstancePrompt = "a sks pattern, [filewords]", InstanceToken = "sks",
        ClassPrompt = "a pattern", ClassToken = "pattern", NumClassImagesPer = classImagesPer, ClassInferSteps = 4,
        SaveSamplePrompt = "a sks pattern", NSaveSample = 2, SaveInferSteps = 4, SampleSeed = 5,
    };

    public static ConceptOptions Rings() => new()
    {
        InstanceDataDir = Concepts("teal-rings"), InstancePrompt = "[filewords]", InstanceToken = "zwx", ClassToken = "rings",
        SaveSamplePrompt = "zwx rings", NSaveSample = 2, SaveInferSteps = 4, SampleSeed = 5,
    };

    public static DreamBoothOptions Run(string outputDir, int steps) => new()
    {
        Model = Fixtures.SdTiny(), OutputDir = outputDir, Resolution = "64", TrainBatchSize = 1, MaxTrainSteps = steps,
        LearningRate = 3e-3, LoraRank = 4, Seed = 3, EvalEveryNSteps = 5, EvalExamples = 4, CheckpointEveryNSteps = 10,
        SampleEveryNSteps = 0, SampleEngine = "cudadream", Concepts = new[] { Tiles(), Rings() },
    };

    public sealed class Recorder : IProgress<TrainingProgress>
    {
        public List<TrainingProgress> Events { get; } = new();
        public IEnumerable<string> Messages => Events.Where(e => e.Message != null).Select(e => e.Message!);
        public void Report(TrainingProgress value) { lock (Events) Events.Add(value); }
    }
}
