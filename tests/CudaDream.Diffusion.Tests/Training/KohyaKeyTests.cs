using System.Text.RegularExpressions;
using CudaDream.Diffusion.Models.Builder;
using CudaDream.Engine.Formats;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Training.Lora;
using CudaDream.TestSupport;
using Xunit;

namespace CudaDream.Diffusion.Tests.Training;

/// <summary>
/// [T1] acceptance: the LoRA keys CudaDream writes map, by AUTOMATIC1111's published rules (its built-in Lora
/// extension converts kohya's diffusers-style names to the original-SD module names with the regexes below),
/// onto real SD 1.5 module names, with the shapes those modules need. The expected modules are a fixed table
/// of SD 1.5's original layout written out here, not the project's own module list.
/// </summary>
public class KohyaKeyTests
{
    /// <summary>A1111 (extensions-builtin/Lora) kohya → compvis module-name rules, as (pattern, rewrite).</summary>
    private static readonly (Regex Pattern, Func<Match, string> Rewrite)[] A1111Rules =
    {
        (new(@"^lora_unet_conv_in(.*)$"), m => $"diffusion_model_input_blocks_0_0{m.Groups[1]}"),
        (new(@"^lora_unet_conv_out(.*)$"), m => $"diffusion_model_out_2{m.Groups[1]}"),
        (new(@"^lora_unet_time_embedding_linear_(\d+)(.*)$"), m => $"diffusion_model_time_embed_{int.Parse(m.Groups[1].Value) * 2 - 2}{m.Groups[2]}"),
        (new(@"^lora_unet_down_blocks_(\d+)_(attentions|resnets)_(\d+)_(.+)$"), m =>
            $"diffusion_model_input_blocks_{1 + int.Parse(m.Groups[1].Value) * 3 + int.Parse(m.Groups[3].Value)}_{(m.Groups[2].Value == "attentions" ? 1 : 0)}_{m.Groups[4]}"),
        (new(@"^lora_unet_mid_block_(attentions|resnets)_(\d+)_(.+)$"), m =>
            $"diffusion_model_middle_block_{(m.Groups[1].Value == "attentions" ? 1 : int.Parse(m.Groups[2].Value) * 2)}_{m.Groups[3]}"),
        (new(@"^lora_unet_up_blocks_(\d+)_(attentions|resnets)_(\d+)_(.+)$"), m =>
            $"diffusion_model_output_blocks_{int.Parse(m.Groups[1].Value) * 3 + int.Parse(m.Groups[3].Value)}_{(m.Groups[2].Value == "attentions" ? 1 : 0)}_{m.Groups[4]}"),
        (new(@"^lora_unet_down_blocks_(\d+)_downsamplers_0_conv$"), m => $"diffusion_model_input_blocks_{3 + int.Parse(m.Groups[1].Value) * 3}_0_op"),
        (new(@"^lora_unet_up_blocks_(\d+)_upsamplers_0_conv$"), m => $"diffusion_model_output_blocks_{2 + int.Parse(m.Groups[1].Value) * 3}_{(int.Parse(m.Groups[1].Value) > 0 ? 2 : 1)}_conv"),
        (new(@"^lora_te_text_model_encoder_layers_(\d+)_(.+)$"), m => $"transformer_text_model_encoder_layers_{m.Groups[1]}_{m.Groups[2]}"),
    };

    private static string? A1111Name(string kohyaModule)
    {
        foreach (var (pattern, rewrite) in A1111Rules)
            if (pattern.Match(kohyaModule) is { Success: true } m) return rewrite(m);
        return null;
    }

    /// <summary>SD 1.5's transformer and text-encoder linears in the original layout (dots as underscores), with [out, in(, k, k)].</summary>
    private static Dictionary<string, int[]> Sd15Modules()
    {
        var table = new Dictionary<string, int[]>();
        void Transformer(string block, int c)
        {
            string t = $"diffusion_model_{block}_transformer_blocks_0_";
            foreach (var a in new[] { "attn1", "attn2" })
            {
                table[t + a + "_to_q"] = new[] { c, c };
                table[t + a + "_to_k"] = new[] { c, a == "attn1" ? c : 768 };
                table[t + a + "_to_v"] = new[] { c, a == "attn1" ? c : 768 };
                table[t + a + "_to_out_0"] = new[] { c, c };
            }
            table[t + "ff_net_0_proj"] = new[] { 8 * c, c };
            table[t + "ff_net_2"] = new[] { c, 4 * c };
            table[$"diffusion_model_{block}_proj_in"] = new[] { c, c, 1, 1 };
            table[$"diffusion_model_{block}_proj_out"] = new[] { c, c, 1, 1 };
        }
        foreach (var (i, c) in new[] { (1, 320), (2, 320), (4, 640), (5, 640), (7, 1280), (8, 1280) }) Transformer($"input_blocks_{i}_1", c);
        Transformer("middle_block_1", 1280);
        foreach (var (i, c) in new[] { (3, 1280), (4, 1280), (5, 1280), (6, 640), (7, 640), (8, 640), (9, 320), (10, 320), (11, 320) }) Transformer($"output_blocks_{i}_1", c);
        for (int l = 0; l < 12; l++)
        {
            string p = $"transformer_text_model_encoder_layers_{l}_";
            foreach (var proj in new[] { "q_proj", "k_proj", "v_proj", "out_proj" }) table[p + "self_attn_" + proj] = new[] { 768, 768 };
            table[p + "mlp_fc1"] = new[] { 3072, 768 };
            table[p + "mlp_fc2"] = new[] { 768, 3072 };
        }
        return table;
    }

    [Fact]
    public void KohyaPresetKeysMapOntoSd15ModulesWithTheirShapes()
    {
        using var dir = Fixtures.TempDir();
        // The adapters a kohya-preset run on SD 1.5 would train: UNet from the SD 1.5 structure graph, text encoder
        // from a shapes-only CLIP ViT-L/14 build, written as the trainer writes its result.
        var unet = OnnxImporter.Load(Fixtures.Path("sd15-structure/unet/model.onnx"), loadExternalData: false);
        CudaDream.Engine.GraphPasses.Prepare(unet, new Dictionary<string, int[]> { ["sample"] = new[] { 1, 4, 64, 64 }, ["timestep"] = new[] { 1 }, ["encoder_hidden_states"] = new[] { 1, 77, 768 } }, fuse: true);
        var tePath = dir.File("text_encoder.onnx");
        ShapesOnlyGraph.Write(ClipTextGraph.Build(ClipTextConfig.Sd15, null), tePath);
        var te = OnnxImporter.Load(tePath, loadExternalData: false);
        CudaDream.Engine.GraphPasses.Prepare(te, new Dictionary<string, int[]> { ["input_ids"] = new[] { 1, 77 } }, fuse: true);
        var targets = LoraTargetSelector.Select(GraphLora.Targets(unet, LoraComponents.UNet), new[] { "kohya" })
            .Concat(LoraTargetSelector.Select(GraphLora.Targets(te, LoraComponents.TextEncoder), new[] { "kohya" })).ToList();
        var lora = dir.File("lora.safetensors");
        LoraWriter.WriteKohya(lora, GraphLora.Initialize(targets, rank: 4, alpha: 4, seed: 1));

        var expected = Sd15Modules();
        using var file = SafetensorsFile.Open(lora);
        var modules = file.Names.Select(n => n[..n.IndexOf('.')]).Distinct().ToList();
        Assert.Equal(expected.Count, modules.Count); // 16 transformers × 10 + 12 CLIP layers × 6 = 232
        var seen = new HashSet<string>();
        foreach (var module in modules)
        {
            var ldm = A1111Name(module);
            Assert.True(ldm != null, $"{module}: no AUTOMATIC1111 rule maps it");
            Assert.True(expected.TryGetValue(ldm!, out var shape), $"{module} → {ldm}: not an SD 1.5 module");
            Assert.True(seen.Add(ldm!), $"{ldm} is targeted twice");
            var down = file.Entry(module + ".lora_down.weight").Shape;
            var up = file.Entry(module + ".lora_up.weight").Shape;
            Assert.Equal(4, down[0]);
            Assert.Equal(shape[1], down[1]);
            Assert.Equal(shape[0], up[0]);
            Assert.Equal(4, up[1]);
            if (shape.Length == 4) { Assert.Equal(new[] { 4, shape[1], 1, 1 }, down); Assert.Equal(new[] { shape[0], 4, 1, 1 }, up); }
            Assert.Empty(file.Entry(module + ".alpha").Shape);
        }
    }
}
