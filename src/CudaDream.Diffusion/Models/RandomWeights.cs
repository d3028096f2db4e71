using CudaDream.Diffusion.Models.Builder;
using CudaDream.Diffusion.Models.Import;
using CudaDream.Engine;
using CudaDream.Engine.Randomness;
using CudaDream.Engine.Tensors;

namespace CudaDream.Diffusion.Models;

/// <summary>
/// An SD 1.x model with seeded random weights — the architecture without a checkpoint — so a GPU machine can time the real
/// size (bench --sd15). Every tensor of the checkpoint table gets the scale a freshly initialised network has, so
/// activations keep their size through 16 transformer blocks in fp16: matrices and kernels N(0, 1/fan_in) (LeCun), token and
/// position embeddings N(0, 0.02²) (CLIP's init), norm scales 1, biases and norm shifts 0. Tensor i of the table draws
/// its own counter-based stream (seed, i), so a model is the same on every machine.
/// </summary>
public static class RandomWeights
{
    public static DiffusersWeights For(SdModelConfig config, ulong seed)
    {
        var table = CheckpointNames.Table(config);
        var byComponent = new Dictionary<string, Dictionary<string, Tensor>>
        {
            [Components.UNet] = new(StringComparer.Ordinal), [Components.Vae] = new(StringComparer.Ordinal), [Components.TextEncoder] = new(StringComparer.Ordinal),
        };
        for (int i = 0; i < table.Count; i++)
        {
            var key = table[i];
            byComponent[key.Component][key.Diffusers] = Initial(key.Diffusers, key.Shape, seed, i);
        }
        return new DiffusersWeights(byComponent[Components.UNet], byComponent[Components.Vae], byComponent[Components.TextEncoder]);
    }

    /// <summary>The initial value of one tensor (see the class comment).</summary>
    public static Tensor Initial(string name, int[] shape, ulong seed, long index)
    {
        var data = new float[Shapes.Numel(shape)];
        if (shape.Length == 1)
        {
            if (name.EndsWith(".weight", StringComparison.Ordinal)) Array.Fill(data, 1f); // every rank-1 weight of SD 1.x is a norm's scale
            return Tensor.FromArray(data, shape);
        }
        bool embedding = name.Contains("embedding", StringComparison.Ordinal) && !name.Contains("time_embedding", StringComparison.Ordinal);
        double std = embedding ? 0.02 : 1.0 / Math.Sqrt(Shapes.Numel(shape.AsSpan(1)));
        CounterRng.FillNormal(data, seed, index, RandomPurpose.ArchitectureWeights);
        float s = (float)std;
        for (int k = 0; k < data.Length; k++) data[k] *= s;
        return Tensor.FromArray(data, shape);
    }

    /// <summary>
    /// The SD 1.5 architecture with seeded random fp16 weights as a diffusers ONNX folder under <paramref name="cacheDir"/>
    /// (about 2 GB, written once per seed and reused), with the bundled CLIP tokenizer. Returns the folder.
    /// </summary>
    public static string Sd15Folder(string cacheDir, ulong seed = 1, Action<string>? progress = null)
    {
        var dir = Path.Combine(cacheDir, $"sd15-random-seed{seed}");
        if (File.Exists(Path.Combine(dir, "model_index.json"))) return dir;
        var partial = dir + ".partial";
        if (Directory.Exists(partial)) Directory.Delete(partial, true);
        progress?.Invoke($"building SD 1.5 with seeded random weights (seed {seed}) in {dir}");
        var config = SdModelConfig.Sd15;
        OnnxModelFolder.Write(partial, new OnnxModelFolder.Contents(config, For(config, seed), DType.F16, CheckpointImporter.BundledTokenizerDir(),
            OnnxModelFolder.Sd15SchedulerConfig), progress);
        Directory.Move(partial, dir); // whole or absent: a killed build leaves only the .partial folder
        return dir;
    }
}
