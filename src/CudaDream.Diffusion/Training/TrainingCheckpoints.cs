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

    /// <summary>The file of a checkpoint holding the EMA tensors (runs with use_ema).</summary>
    public const string EmaFile = "ema.safetensors";

    public string Save(TrainerState state, IReadOnlyDictionary<string, Tensor> parameters, IReadOnlyDictionary<string, Tensor> optimizer,
        IReadOnlyDictionary<string, Tensor>? ema = null)
    {
        var final = Path.Combine(Directory, $"step-{state.Update:D6}");
        var temp = Path.Combine(Directory, $".step-{state.Update:D6}.{Environment.ProcessId}.tmp");
        try
        {
            System.IO.Directory.CreateDirectory(Directory);
            if (System.IO.Directory.Exists(temp)) System.IO.Directory.Delete(temp, true);
            System.IO.Directory.CreateDirectory(temp);
            SafetensorsWriter.Write(Path.Combine(temp, "parameters.safetensors"), parameters);
            SafetensorsWriter.Write(Path.Combine(temp, "optimizer.safetensors"), optimizer);
            if (ema != null) SafetensorsWriter.Write(Path.Combine(temp, EmaFile), ema);
            AtomicFile.WriteAllText(Path.Combine(temp, "state.json"), JsonSerializer.Serialize(state));
            FaultInjection.At("checkpoint-before-rename");
            if (System.IO.Directory.Exists(final))
            {
                // Same update saved again (a resumed run stopped before its next update): swap, never delete first, so a
                // kill between the two renames still leaves one complete checkpoint of this update on disk.
                var previous = Path.Combine(Directory, $".step-{state.Update:D6}.{Environment.ProcessId}.old.tmp");
                System.IO.Directory.Move(final, previous);
                System.IO.Directory.Move(temp, final);
                System.IO.Directory.Delete(previous, true);
            }
            else System.IO.Directory.Move(temp, final);
        }
        catch (Exception e)
        {
            // A full disk must not keep half a checkpoint (nor the space it took).
            try { if (System.IO.Directory.Exists(temp)) System.IO.Directory.Delete(temp, true); } catch (Exception) { /* hidden temp name; pruned later */ }
            // Named by the checkpoint, not by its hidden temporary folder.
            if (e is WriteFailedException { InnerException: { } cause }) throw new WriteFailedException(final, cause);
            if (WriteFailedException.IsFileSystemFailure(e)) throw new WriteFailedException(final, e);
            throw;
        }
        Prune();
        return final;
    }

    /// <summary>The newest complete checkpoint, or null.</summary>
    public string? Latest()
    {
        if (!System.IO.Directory.Exists(Directory)) return null;
        RecoverSwapped();
        return System.IO.Directory.EnumerateDirectories(Directory, "step-*").Where(d => File.Exists(Path.Combine(d, "state.json")))
            .OrderBy(d => d, StringComparer.Ordinal).LastOrDefault();
    }

    /// <summary>A run killed between the two renames of a same-update swap left the complete old copy as <c>.step-N.pid.old.tmp</c>: put it back.</summary>
    private void RecoverSwapped()
    {
        foreach (var old in System.IO.Directory.EnumerateDirectories(Directory, ".step-*.old.tmp").ToList())
        {
            var name = Path.GetFileName(old);
            var final = Path.Combine(Directory, name[1..name.IndexOf('.', 1)]);
            if (!System.IO.Directory.Exists(final) && File.Exists(Path.Combine(old, "state.json"))) System.IO.Directory.Move(old, final);
        }
    }

    public (TrainerState State, Dictionary<string, Tensor> Parameters, Dictionary<string, Tensor> Optimizer, Dictionary<string, Tensor>? Ema) Load(string dir)
    {
        var statePath = Path.Combine(dir, "state.json");
        TrainerState? state;
        try { state = JsonSerializer.Deserialize<TrainerState>(File.ReadAllText(statePath)); }
        catch (JsonException e) { throw new InvalidFileException(statePath, $"not a checkpoint state ({e.Message})"); }
        if (state == null || state.Update < 0) throw new InvalidFileException(statePath, "not a checkpoint state");
        var emaPath = Path.Combine(dir, EmaFile);
        return (state, SafetensorsFile.ReadAll(Path.Combine(dir, "parameters.safetensors")), SafetensorsFile.ReadAll(Path.Combine(dir, "optimizer.safetensors")),
            File.Exists(emaPath) ? SafetensorsFile.ReadAll(emaPath) : null);
    }

    private void Prune()
    {
        var all = System.IO.Directory.EnumerateDirectories(Directory, "step-*").OrderBy(d => d, StringComparer.Ordinal).ToList();
        foreach (var old in all.Take(Math.Max(0, all.Count - keep))) System.IO.Directory.Delete(old, true);
        // Temporary folders of killed runs (a swapped-out copy only once its checkpoint is back under its name).
        RecoverSwapped();
        foreach (var stale in System.IO.Directory.EnumerateDirectories(Directory, ".step-*.tmp"))
            try { System.IO.Directory.Delete(stale, true); } catch (IOException) { }
    }
}
