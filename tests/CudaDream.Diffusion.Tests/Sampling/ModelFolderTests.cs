using System.Text.Json;
using System.Text.Json.Nodes;
using CudaDream.Diffusion.Models;
using CudaDream.Engine;
using CudaDream.TestSupport;
using Xunit;

namespace CudaDream.Diffusion.Tests.Sampling;

/// <summary>Opening diffusers ONNX folders: what sd-tiny's graphs say about themselves, and every missing or inconsistent part reported by name.</summary>
public sealed class ModelFolderTests : IDisposable
{
    private readonly TempDir _dir = Fixtures.TempDir();

    public void Dispose() => _dir.Dispose();

    [Fact]
    public void Sd_tiny_opens_with_the_facts_of_its_configs()
    {
        var folder = ModelFolder.Open(Fixtures.SdTiny());
        var vae = JsonNode.Parse(File.ReadAllText(Fixtures.SdTiny("configs/vae/config.json")))!;
        var unet = JsonNode.Parse(File.ReadAllText(Fixtures.SdTiny("configs/unet/config.json")))!;
        Assert.Equal(vae["latent_channels"]!.GetValue<int>(), folder.LatentChannels);
        // 4 VAE blocks → 3 upsamplers → 8 pixels per latent.
        Assert.Equal(1 << (vae["block_out_channels"]!.AsArray().Count - 1), folder.VaeScaleFactor);
        Assert.Equal(0.18215f, folder.LatentScale);
        // A downsampler in every down block but the last.
        Assert.Equal(unet["down_block_types"]!.AsArray().Count - 1, folder.SizeRule.Downsamplers);
        Assert.True(folder.SizeRule.FixedScaleUpsampling);
        Assert.Equal(32, folder.SizeRule.Multiple);
    }

    /// <summary>refs/lora_targets.json was written by the fixture generator from the torch modules and the ONNX files.</summary>
    [Theory]
    [InlineData("unet/model.onnx", "unet")]
    [InlineData("unet_opset17/model.onnx", "unet")]
    [InlineData("text_encoder/model.onnx", "text_encoder")]
    [InlineData("vae_decoder/model.onnx", "vae")]
    public void LoRA_slots_are_the_ones_the_fixture_generator_found(string file, string component)
    {
        var slots = ModelFolderGraph.Load(Fixtures.SdTiny(file)).LinearWeights(component).ToDictionary(s => s.ModulePath);
        using var doc = JsonDocument.Parse(File.ReadAllText(Fixtures.SdTiny("refs/lora_targets.json")));
        var expected = doc.RootElement.GetProperty(file);
        int count = 0;
        foreach (var entry in expected.EnumerateObject())
        {
            var slot = slots[entry.Name];
            Assert.Equal(entry.Value.GetProperty("weight_initializer").GetString(), slot.Initializer);
            var stored = entry.Value.GetProperty("weight_shape").EnumerateArray().Select(x => x.GetInt32()).ToArray();
            Assert.True(slot.StoredTransposed);
            Assert.Equal(new[] { stored[1], stored[0] }, slot.WeightShape);
            count++;
        }
        Assert.True(count > 0);
    }

    [Fact]
    public void Missing_parts_are_named()
    {
        var copy = CopyFixture();
        File.Delete(Path.Combine(copy, "vae_decoder/model.onnx"));
        File.Delete(Path.Combine(copy, "tokenizer/merges.txt"));
        var e = Assert.Throws<CudaDreamException>(() => ModelFolder.Open(copy));
        Assert.Contains("missing vae_decoder/model.onnx, tokenizer/merges.txt", e.Message);
    }

    [Fact]
    public void Missing_external_weights_are_named()
    {
        var copy = CopyFixture();
        File.Delete(Path.Combine(copy, "unet/weights.pb"));
        var e = Assert.ThrowsAny<CudaDreamException>(() => ModelFolder.Open(copy));
        Assert.Contains("weights.pb", e.Message);
        Assert.Contains("not found", e.Message);
    }

    [Fact]
    public void Truncated_external_weights_are_refused()
    {
        var copy = CopyFixture();
        var weights = Path.Combine(copy, "unet/weights.pb");
        using (var f = File.Open(weights, FileMode.Open)) f.SetLength(f.Length / 2);
        var e = Assert.ThrowsAny<CudaDreamException>(() => ModelFolder.Open(copy));
        Assert.Contains("weights.pb", e.Message);
        Assert.Contains("past the end", e.Message);
    }

    [Fact]
    public void A_folder_without_model_index_is_not_taken_for_a_pipeline()
    {
        var copy = CopyFixture();
        File.Delete(Path.Combine(copy, "model_index.json"));
        Assert.Contains("no model_index.json", Assert.Throws<CudaDreamException>(() => ModelFolder.Open(copy)).Message);
    }

    [Fact]
    public void A_model_index_without_a_unet_is_refused()
    {
        var copy = CopyFixture();
        var path = Path.Combine(copy, "model_index.json");
        var index = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        index.Remove("unet");
        File.WriteAllText(path, index.ToJsonString());
        var e = Assert.Throws<InvalidFileException>(() => ModelFolder.Open(copy));
        Assert.Contains("does not list unet", e.Message);
    }

    [Fact]
    public void A_tokenizer_from_another_model_is_reported_as_inconsistent()
    {
        var copy = CopyFixture();
        var path = Path.Combine(copy, "tokenizer/vocab.json");
        var vocab = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        vocab["extra</w>"] = 1200;
        File.WriteAllText(path, vocab.ToJsonString());
        var e = Assert.Throws<CudaDreamException>(() => ModelFolder.Open(copy));
        Assert.Contains("inconsistent model folder", e.Message);
        Assert.Contains("tokenizer has 1201 tokens, text_encoder embeds 1000", e.Message);
    }

    [Fact]
    public void A_corrupt_graph_is_named()
    {
        var copy = CopyFixture();
        File.WriteAllBytes(Path.Combine(copy, "text_encoder/model.onnx"), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
        var e = Assert.ThrowsAny<CudaDreamException>(() => ModelFolder.Open(copy));
        Assert.Contains("text_encoder", e.Message);
    }

    [Fact]
    public void Img2img_without_a_vae_encoder_says_so()
    {
        var copy = CopyFixture();
        File.Delete(Path.Combine(copy, "vae_encoder/model.onnx"));
        var folder = ModelFolder.Open(copy); // txt2img needs no encoder
        Assert.Contains("vae_encoder/model.onnx", Assert.Throws<CudaDreamException>(() => folder.RequireVaeEncoder()).Message);
    }

    [Theory]
    [InlineData(100, 128, "96x128 or 128x128")]
    [InlineData(20, 128, "32x128")]
    [InlineData(128, 130, "128x128 or 128x160")]
    public void Invalid_sizes_get_the_nearest_valid_ones(int width, int height, string suggestion)
    {
        var folder = ModelFolder.Open(Fixtures.SdTiny());
        var e = Assert.Throws<CudaDreamException>(() => folder.CheckImageSize(width, height));
        Assert.EndsWith("nearest valid sizes: " + suggestion, e.Message);
        folder.CheckImageSize(128, 96);
    }

    private string CopyFixture() => CopyFixtureTo(_dir.File("model"));

    /// <summary>The fixture folder without the extra graphs and references (≈ 11 MB).</summary>
    internal static string CopyFixtureTo(string dst)
    {
        Directory.CreateDirectory(dst);
        foreach (var part in new[] { "model_index.json", "scheduler", "tokenizer", "text_encoder", "unet", "vae_encoder", "vae_decoder" })
        {
            var src = Fixtures.SdTiny(part);
            if (File.Exists(src)) { File.Copy(src, Path.Combine(dst, part)); continue; }
            Directory.CreateDirectory(Path.Combine(dst, part));
            foreach (var f in Directory.GetFiles(src)) File.Copy(f, Path.Combine(dst, part, Path.GetFileName(f)));
        }
        return dst;
    }
}
