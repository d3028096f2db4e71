using System.Text.Json;
using CudaDream.Engine;
using CudaDream.Engine.Formats;
using CudaDream.Engine.Tensors;

namespace CudaDream.Diffusion.Training;

/// <summary>Where a run stands: the optimizer updates done and the settings that must not change on resume.</summary>
public sealed record TrainerState(int Update, string ConfigHash, int TotalUpdates);

/// <summary>
/// Resumable checkpoints: <c>checkpoints/step-000120/</c> holding the trainable tensors (<c>parameters.safetensors</c>),
/// the optimizer state (<c>optimizer.safetensors</c>) and <c>state.json</c>. A checkpoint is written into a
/// hidden temporary folder and renamed when complete, so a killed run never leaves half a checkpoint; the
/// last K are kept. Data order, noise and timesteps are functions of (seed, step), so nothing else is needed
/// to continue exactly.
/// </summary>
public sealed class TrainingCheckpoints(string outputDir, int keep)
{
    public string Directory { get; } = Path.Combine(outputDir, "checkpoints");

    public string Save(TrainerState state, IReadOnlyDictionary<string, Tensor> parameters, IReadOnlyDictionary<string, Tensor> optimizer)
    {
        System.IO.Directory.CreateDirectory(Directory);
        var final = Path.Combine(Directory, $"step-{state.Update:D6}");
        var temp = Path.Combine(Directory, $".step-{state.Update:D6}.{Environment.ProcessId}.tmp");
        if (System.IO.Directory.Exists(temp)) System.IO.Directory.Delete(temp, true);
        System.IO.Directory.CreateDirectory(temp);
        SafetensorsWriter.Write(Path.Combine(temp, "parameters.safetensors"), parameters);
        SafetensorsWriter.Write(Path.Combine(temp, "optimizer.safetensors"), optimizer);
        AtomicFile.WriteAllText(Path.Combine(temp, "state.json"), JsonSerializer.Serialize(state));
        if (System.IO.Directory.Exists(final)) System.IO.Directory.Delete(final, true);
        System.IO.Directory.Move(temp, final);
        Prune();
        return final;
    }

    /// <summary>The newest complete checkpoint, or null.</summary>
    public string? Latest() =>
        !System.IO.Directory.Exists(Directory) ? null
        : System.IO.Directory.EnumerateDirectories(Directory, "step-*").Where(d => File.Exists(Path.Combine(d, "state.json")))
            .OrderBy(d => d, StringComparer.Ordinal).LastOrDefault();

    public (TrainerState State, Dictionary<string, Tensor> Parameters, Dictionary<string, Tensor> Optimizer) Load(string dir)
    {
        var statePath = Path.Combine(dir, "state.json");
        TrainerState? state;
        try { state = JsonSerializer.Deserialize<TrainerState>(File.ReadAllText(statePath)); }
        catch (JsonException e) { throw new InvalidFileException(statePath, $"not a checkpoint state ({e.Message})"); }
        if (state == null || state.Update < 0) throw new InvalidFileException(statePath, "not a checkpoint state");
        return (state, SafetensorsFile.ReadAll(Path.Combine(dir, "parameters.safetensors")), SafetensorsFile.ReadAll(Path.Combine(dir, "optimizer.safetensors")));
    }

    private void Prune()
    {
        var all = System.IO.Directory.EnumerateDirectories(Directory, "step-*").OrderBy(d => d, StringComparer.Ordinal).ToList();
        foreach (var old in all.Take(Math.Max(0, all.Count - keep))) System.IO.Directory.Delete(old, true);
        // Temporary folders of killed runs.
        foreach (var stale in System.IO.Directory.EnumerateDirectories(Directory, ".step-*.tmp"))
            try { System.IO.Directory.Delete(stale, true); } catch (IOException) { }
    }
}
