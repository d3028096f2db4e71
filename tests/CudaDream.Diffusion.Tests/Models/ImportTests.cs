using System.Text.Json.Nodes;
using CudaDream.Diffusion.Models.Import;
using CudaDream.Engine;
using CudaDream.Engine.Formats;
using CudaDream.Engine.Tensors;
using CudaDream.TestSupport;
using Xunit;
using Xunit.Abstractions;

namespace CudaDream.Diffusion.Tests.Models;

/// <summary>
/// `import` of the sd-tiny original-SD checkpoint: the written folder's graphs reproduce the PyTorch
/// references on ONNX Runtime; bad inputs are refused before anything is written.
/// </summary>
public sealed class ImportTests(ITestOutputHelper output) : IDisposable
{
    private readonly TempDir _dir = Fixtures.TempDir();

    internal static ImportOptions TinyOptions(DType dtype = DType.F32) => new()
    {
        FloatType = dtype,
        TokenizerDir = Fixtures.SdTiny("tokenizer"),
        ConfigDir = Fixtures.SdTiny("configs"),
    };

    /// <summary>Runs the four graphs of a model folder on the reference inputs; returns relative max errors.</summary>
    internal static Dictionary<string, double> CompareWithRefs(string folder, DType dtype)
    {
        Tensor In(Tensor t) => t.DType == DType.F32 ? t.To(dtype) : t;
        var errors = new Dictionary<string, double>();
        var te = SafetensorsFile.ReadAll(Fixtures.SdTiny("refs/text_encoder.safetensors"));
        var o = OrtRunner.Run(Path.Combine(folder, "text_encoder/model.onnx"), new() { ["input_ids"] = te["input_ids"] });
        errors["last_hidden_state"] = TensorAssert.RelativeMaxError(o["last_hidden_state"], te["last_hidden_state"]);
        errors["pooler_output"] = TensorAssert.RelativeMaxError(o["pooler_output"], te["pooler_output"]);
        var u = SafetensorsFile.ReadAll(Fixtures.SdTiny("refs/unet.safetensors"));
        o = OrtRunner.Run(Path.Combine(folder, "unet/model.onnx"), new()
        {
            ["sample"] = In(u["sample"]), ["timestep"] = In(u["timestep"]), ["encoder_hidden_states"] = In(u["encoder_hidden_states"]),
        });
        errors["out_sample"] = TensorAssert.RelativeMaxError(o["out_sample"], u["out_sample"]);
        var d = SafetensorsFile.ReadAll(Fixtures.SdTiny("refs/vae_decoder.safetensors"));
        o = OrtRunner.Run(Path.Combine(folder, "vae_decoder/model.onnx"), new() { ["latent_sample"] = In(d["latent_sample"]) });
        errors["vae_decoder.sample"] = TensorAssert.RelativeMaxError(o["sample"], d["sample"]);
        var e = SafetensorsFile.ReadAll(Fixtures.SdTiny("refs/vae_encoder.safetensors"));
        o = OrtRunner.Run(Path.Combine(folder, "vae_encoder/model.onnx"), new() { ["sample"] = In(e["sample"]) });
        errors["moments"] = TensorAssert.RelativeMaxError(o["moments"], e["moments"]);
        return errors;
    }

    private void AssertErrors(Dictionary<string, double> errors, double tol, string what)
    {
        foreach (var (k, v) in errors) output.WriteLine($"{what} {k}: {v:E2}");
        foreach (var (k, v) in errors) Assert.True(v <= tol, $"{what} {k}: relative max error {v:E2} > {tol:E1}");
    }

    [Fact]
    public void Fp32CheckpointImportsToAFolderThatReproducesTheReferences()
    {
        var outDir = _dir.File("model");
        var report = CheckpointImporter.Import(Fixtures.SdTiny("checkpoint.safetensors"), outDir, TinyOptions());
        Assert.Equal(2_472_691, report.Parameters);
        Assert.Empty(report.Warnings);
        AssertErrors(CompareWithRefs(outDir, DType.F32), 1e-4, "fp32");

        foreach (var f in new[] { "model_index.json", "scheduler/scheduler_config.json", "tokenizer/vocab.json", "tokenizer/merges.txt",
                     "tokenizer/special_tokens_map.json", "tokenizer/tokenizer_config.json", "unet/model.onnx", "unet/weights.pb",
                     "unet/config.json", "text_encoder/model.onnx", "vae_encoder/model.onnx", "vae_decoder/model.onnx" })
            Assert.True(File.Exists(Path.Combine(outDir, f)), f);
        // model_index.json and the scheduler config say what diffusers' own files say.
        Assert.True(JsonNode.DeepEquals(JsonNode.Parse(File.ReadAllText(Fixtures.SdTiny("model_index.json"))), JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, "model_index.json")))));
        Assert.True(JsonNode.DeepEquals(JsonNode.Parse(File.ReadAllText(Fixtures.SdTiny("scheduler/scheduler_config.json"))), JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, "scheduler/scheduler_config.json")))));
        Assert.DoesNotContain(Directory.EnumerateFileSystemEntries(_dir.FullName), p => Path.GetFileName(p).StartsWith('.'));
    }

    [Fact]
    public void Fp16CheckpointImportsAtBothPrecisions()
    {
        var f16 = _dir.File("checkpoint_f16.safetensors");
        using (var ck = SafetensorsFile.Open(Fixtures.SdTiny("checkpoint.safetensors")))
            SafetensorsWriter.Write(f16, ck.Names.ToDictionary(n => n, n => ck.Get(n).To(DType.F16)));

        var half = _dir.File("half");
        CheckpointImporter.Import(f16, half, TinyOptions(DType.F16));
        AssertErrors(CompareWithRefs(half, DType.F16), 5e-3, "fp16 graph");
        var unetWeights = OnnxWeights.Read(Path.Combine(half, "unet/model.onnx"));
        Assert.All(unetWeights.Values, t => Assert.Equal(DType.F16, t.DType));

        var full = _dir.File("full");
        CheckpointImporter.Import(f16, full, TinyOptions(DType.F32));
        AssertErrors(CompareWithRefs(full, DType.F32), 5e-3, "fp16 weights, fp32 graph");
    }

    [Fact]
    public void ImportedInitializersAreTheCheckpointTensorsUnderDiffusersNames()
    {
        var outDir = _dir.File("model");
        CheckpointImporter.Import(Fixtures.SdTiny("checkpoint.safetensors"), outDir, TinyOptions());
        using var ck = SafetensorsFile.Open(Fixtures.SdTiny("checkpoint.safetensors"));
        var unet = OnnxWeights.Read(Path.Combine(outDir, "unet/model.onnx"));
        Assert.Equal(ck.Get("model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight").ToFloat32Array(),
            unet["down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight"].ToFloat32Array());
        var dec = OnnxWeights.Read(Path.Combine(outDir, "vae_decoder/model.onnx"));
        var q = dec["decoder.mid_block.attentions.0.to_q.weight"];
        Assert.Equal(new[] { 32, 32 }, q.Shape);
        Assert.Equal(ck.Get("first_stage_model.decoder.mid.attn_1.q.weight").ToFloat32Array(), q.ToFloat32Array());
    }

    [Fact]
    public void SdTinyNeedsItsOwnTokenizerAndConfig()
    {
        var ck = Fixtures.SdTiny("checkpoint.safetensors");
        var e = Assert.Throws<CudaDreamException>(() => CheckpointImporter.Import(ck, _dir.File("a"), TinyOptions() with { ConfigDir = null }));
        Assert.Contains("--config", e.Message);
        e = Assert.Throws<CudaDreamException>(() => CheckpointImporter.Import(ck, _dir.File("b"), TinyOptions() with { TokenizerDir = null }));
        Assert.Contains("--tokenizer", e.Message);
        Assert.Contains("1000", e.Message);
        Assert.Empty(Directory.EnumerateFileSystemEntries(_dir.FullName));
    }

    [Fact]
    public void ANonEmptyOutputFolderIsNeverOverwritten()
    {
        var outDir = _dir.File("taken");
        Directory.CreateDirectory(outDir);
        File.WriteAllText(Path.Combine(outDir, "keep.txt"), "mine");
        var e = Assert.Throws<CudaDreamException>(() => CheckpointImporter.Import(Fixtures.SdTiny("checkpoint.safetensors"), outDir, TinyOptions()));
        Assert.Contains("not empty", e.Message);
        Assert.Equal(new[] { "keep.txt" }, Directory.GetFileSystemEntries(outDir).Select(Path.GetFileName));
        Assert.Single(Directory.GetFileSystemEntries(_dir.FullName));
    }

    [Fact]
    public void PickleCheckpointsAreRefusedUnread()
    {
        var ckpt = _dir.File("model.ckpt");
        File.WriteAllBytes(ckpt, [0x80, 0x02, 0x7d, 0x71]);
        var e = Assert.Throws<CudaDreamException>(() => CheckpointImporter.Import(ckpt, _dir.File("out"), TinyOptions()));
        Assert.Contains("pickle", e.Message);
        Assert.Contains("safetensors", e.Message);
        // The same bytes under a .safetensors name are recognised too.
        var disguised = _dir.File("model.safetensors");
        File.WriteAllBytes(disguised, [0x80, 0x02, 0x7d, 0x71, 0, 0, 0, 0, 0]);
        Assert.Contains("pickle", Assert.Throws<CudaDreamException>(() => CheckpointImporter.Import(disguised, _dir.File("out"), TinyOptions())).Message);
        Assert.False(Directory.Exists(_dir.File("out")));
    }

    [Fact]
    public void TruncatedCheckpointFailsBeforeAnyOutput()
    {
        var bytes = File.ReadAllBytes(Fixtures.SdTiny("checkpoint.safetensors"));
        var cut = _dir.File("cut.safetensors");
        File.WriteAllBytes(cut, bytes[..(bytes.Length - 1000)]);
        var e = Assert.Throws<InvalidFileException>(() => CheckpointImporter.Import(cut, _dir.File("out"), TinyOptions()));
        Assert.Contains("cut.safetensors", e.Message);
        Assert.False(Directory.Exists(_dir.File("out")));
        Assert.Single(Directory.EnumerateFileSystemEntries(_dir.FullName));
    }

    [Fact]
    public void MissingAndMisshapedKeysAreListed()
    {
        var broken = _dir.File("broken.safetensors");
        using (var ck = SafetensorsFile.Open(Fixtures.SdTiny("checkpoint.safetensors")))
        {
            var tensors = ck.Names.ToDictionary(n => n, n => ck.Get(n));
            tensors.Remove("model.diffusion_model.out.2.bias");
            tensors.Remove("first_stage_model.decoder.conv_in.weight");
            tensors["model.diffusion_model.time_embed.2.bias"] = Tensor.Zeros(DType.F32, 7);
            SafetensorsWriter.Write(broken, tensors);
        }
        var e = Assert.Throws<InvalidFileException>(() => CheckpointImporter.Import(broken, _dir.File("out"), TinyOptions()));
        output.WriteLine(e.Message);
        Assert.Contains("model.diffusion_model.out.2.bias", e.Message);
        Assert.Contains("first_stage_model.decoder.conv_in.weight", e.Message);
        Assert.Contains("model.diffusion_model.time_embed.2.bias is [7]", e.Message);
        Assert.False(Directory.Exists(_dir.File("out")));
    }

    [Theory]
    [InlineData("inpainting", "inpainting")]
    [InlineData("sd2", "2.x")]
    [InlineData("sdxl", "SDXL")]
    [InlineData("lora", "LoRA")]
    public void OtherFamiliesAreNamedAndRefused(string kind, string expected)
    {
        var path = _dir.File(kind + ".safetensors");
        var t = new Dictionary<string, Tensor>();
        switch (kind)
        {
            case "inpainting": t["model.diffusion_model.input_blocks.0.0.weight"] = Tensor.Zeros(DType.F16, 8, 9, 3, 3); break;
            case "sd2":
                t["model.diffusion_model.input_blocks.0.0.weight"] = Tensor.Zeros(DType.F16, 8, 4, 3, 3);
                t["model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"] = Tensor.Zeros(DType.F16, 8, 1024);
                break;
            case "sdxl":
                t["model.diffusion_model.input_blocks.0.0.weight"] = Tensor.Zeros(DType.F16, 8, 4, 3, 3);
                t["conditioner.embedders.0.transformer.text_model.final_layer_norm.weight"] = Tensor.Zeros(DType.F16, 8);
                break;
            case "lora": t["lora_unet_down_blocks_0_attentions_0_proj_in.alpha"] = Tensor.Scalar(1f); break;
        }
        SafetensorsWriter.Write(path, t);
        var e = Assert.Throws<CudaDreamException>(() => CheckpointImporter.Import(path, _dir.File("out"), TinyOptions()));
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void LegacyVaeNamesFloatPositionIdsAndEmaAreHandled()
    {
        var variant = _dir.File("variant.safetensors");
        using (var ck = SafetensorsFile.Open(Fixtures.SdTiny("checkpoint.safetensors")))
        {
            var tensors = new Dictionary<string, Tensor>();
            foreach (var n in ck.Names)
            {
                var t = ck.Get(n);
                // pre-0.14 converter names, [C,C] linear shapes
                var legacy = n.Replace("mid.attn_1.q.", "mid.attn_1.to_q.").Replace("mid.attn_1.k.", "mid.attn_1.to_k.")
                    .Replace("mid.attn_1.v.", "mid.attn_1.to_v.").Replace("mid.attn_1.proj_out.", "mid.attn_1.to_out.0.");
                tensors[legacy] = legacy != n && t.Rank == 4 ? t.Reshape(t.Shape[0], t.Shape[1]) : t;
                if (n.StartsWith("model.diffusion_model.", StringComparison.Ordinal))
                    tensors["model_ema.diffusion_model" + n["model.diffusion_model.".Length..].Replace(".", "")] = Tensor.Zeros(t.DType, t.Shape);
            }
            // positions stored as floats a hair below their integers: truncation would shift them by one.
            tensors["cond_stage_model.transformer.text_model.embeddings.position_ids"] =
                Tensor.FromArray(Enumerable.Range(0, 77).Select(i => i - 0.0001f).ToArray(), 1, 77);
            SafetensorsWriter.Write(variant, tensors);
        }
        var outDir = _dir.File("model");
        var report = CheckpointImporter.Import(variant, outDir, TinyOptions());
        Assert.Contains(report.Warnings, w => w.Contains("EMA"));
        AssertErrors(CompareWithRefs(outDir, DType.F32), 1e-4, "legacy names");

        var ema = _dir.File("ema");
        CheckpointImporter.Import(variant, ema, TinyOptions() with { UseEma = true });
        var unet = OnnxWeights.Read(Path.Combine(ema, "unet/model.onnx"));
        Assert.All(unet["conv_in.weight"].ToFloat32Array(), v => Assert.Equal(0f, v));
    }

    public void Dispose() => _dir.Dispose();
}

public sealed class DiffusersFolderImportTests(ITestOutputHelper output) : IDisposable
{
    private readonly TempDir _dir = Fixtures.TempDir();

    /// <summary>A diffusers folder of the sd-tiny model (pre-0.14 VAE attention names, transformers' position_ids buffer).</summary>
    private string MakeDiffusersFolder()
    {
        var root = _dir.File("diffusers");
        DiffusersWeights w;
        using (var ck = SafetensorsFile.Open(Fixtures.SdTiny("checkpoint.safetensors")))
        {
            var config = Diffusion.Models.Builder.SdModelConfig.FromFolder(Fixtures.SdTiny("configs"));
            var read = LdmCheckpoint.Read(ck, config, false, new List<string>());
            Dictionary<string, Tensor> Copy(IReadOnlyDictionary<string, Tensor> d) => d.ToDictionary(kv => kv.Key, kv => kv.Value.Clone());
            w = new DiffusersWeights(Copy(read.UNet), Copy(read.Vae), Copy(read.TextEncoder));
        }
        Directory.CreateDirectory(Path.Combine(root, "unet"));
        Directory.CreateDirectory(Path.Combine(root, "vae"));
        Directory.CreateDirectory(Path.Combine(root, "text_encoder"));
        SafetensorsWriter.Write(Path.Combine(root, "unet/diffusion_pytorch_model.safetensors"), w.UNet);
        var oldVae = w.Vae.ToDictionary(kv => kv.Key.Replace(".to_q.", ".query.").Replace(".to_k.", ".key.").Replace(".to_v.", ".value.").Replace(".to_out.0.", ".proj_attn."), kv => kv.Value);
        SafetensorsWriter.Write(Path.Combine(root, "vae/diffusion_pytorch_model.safetensors"), oldVae);
        var text = w.TextEncoder.ToDictionary(kv => kv.Key, kv => kv.Value);
        text["text_model.embeddings.position_ids"] = Tensor.FromArray(Enumerable.Range(0, 77).Select(i => (long)i).ToArray(), 1, 77);
        SafetensorsWriter.Write(Path.Combine(root, "text_encoder/model.safetensors"), text);
        File.Copy(Fixtures.SdTiny("configs/unet/config.json"), Path.Combine(root, "unet/config.json"));
        File.Copy(Fixtures.SdTiny("configs/vae/config.json"), Path.Combine(root, "vae/config.json"));
        File.Copy(Fixtures.SdTiny("configs/text_encoder_config.json"), Path.Combine(root, "text_encoder/config.json"));
        Directory.CreateDirectory(Path.Combine(root, "tokenizer"));
        foreach (var f in Directory.GetFiles(Fixtures.SdTiny("tokenizer"))) File.Copy(f, Path.Combine(root, "tokenizer", Path.GetFileName(f)));
        Directory.CreateDirectory(Path.Combine(root, "scheduler"));
        File.Copy(Fixtures.SdTiny("scheduler/scheduler_config.json"), Path.Combine(root, "scheduler/scheduler_config.json"));
        return root;
    }

    [Fact]
    public void DiffusersFolderImportsWithItsOwnConfigAndTokenizer()
    {
        var source = MakeDiffusersFolder();
        var outDir = _dir.File("onnx");
        var report = CheckpointImporter.Import(source, outDir, new ImportOptions());
        Assert.Empty(report.Warnings);
        var errors = ImportTests.CompareWithRefs(outDir, DType.F32);
        foreach (var (k, v) in errors) output.WriteLine($"{k}: {v:E2}");
        Assert.All(errors.Values, v => Assert.True(v <= 1e-4));
    }

    [Fact]
    public void PickleOnlyDiffusersFolderIsRefused()
    {
        var source = MakeDiffusersFolder();
        File.Delete(Path.Combine(source, "unet/diffusion_pytorch_model.safetensors"));
        File.WriteAllBytes(Path.Combine(source, "unet/diffusion_pytorch_model.bin"), [0x80, 0x02]);
        var e = Assert.Throws<CudaDreamException>(() => CheckpointImporter.Import(source, _dir.File("onnx"), new ImportOptions()));
        Assert.Contains("pickle", e.Message);
        Assert.False(Directory.Exists(_dir.File("onnx")));
    }

    public void Dispose() => _dir.Dispose();
}
