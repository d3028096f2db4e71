using System.Globalization;
using CudaDream.Engine.Formats;
using CudaDream.Engine.Tensors;

namespace CudaDream.Engine.Training.Lora;

/// <summary>
/// Writes adapters as a kohya/AUTOMATIC1111 LoRA file (the format A1111, ComfyUI and diffusers'
/// <c>load_lora_weights</c> read): <c>lora_unet_…</c> / <c>lora_te_…</c> keys with <c>.lora_down.weight</c>,
/// <c>.lora_up.weight</c> and a scalar <c>.alpha</c>, plus kohya's <c>ss_*</c> metadata. Written atomically.
/// </summary>
public static class LoraWriter
{
    public static void WriteKohya(string path, IReadOnlyList<LoraAdapter> adapters, IReadOnlyDictionary<string, string>? extraMetadata = null, DType? storeAs = null)
    {
        if (adapters.Count == 0) throw new ArgumentException("no adapters to write");
        var tensors = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var a in adapters)
        {
            string name = LoraFile.KohyaName(a.Component, a.ModulePath);
            tensors[name + ".lora_down.weight"] = storeAs is DType d ? a.Down.To(d) : a.Down;
            tensors[name + ".lora_up.weight"] = storeAs is DType u ? a.Up.To(u) : a.Up;
            tensors[name + ".alpha"] = Tensor.FromArray(new[] { a.Alpha }, Array.Empty<int>());
        }
        var ranks = adapters.Select(a => a.Rank).Distinct().ToList();
        var alphas = adapters.Select(a => a.Alpha).Distinct().ToList();
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            ["ss_network_module"] = "networks.lora",
            ["ss_network_dim"] = ranks.Count == 1 ? ranks[0].ToString(CultureInfo.InvariantCulture) : "Dynamic",
            ["ss_network_alpha"] = alphas.Count == 1 ? alphas[0].ToString("R", CultureInfo.InvariantCulture) : "Dynamic",
        };
        if (extraMetadata != null) foreach (var (k, v) in extraMetadata) metadata[k] = v;
        SafetensorsWriter.Write(path, tensors, metadata);
    }
}
