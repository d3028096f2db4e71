using CudaDream.Diffusion.Models;
using CudaDream.Diffusion.Models.Export;
using CudaDream.Diffusion.Models.Import;
using CudaDream.Engine;
using CudaDream.Engine.Formats;
using CudaDream.Engine.Tensors;
using CudaDream.Engine.Training.Lora;
using CudaDream.TestSupport;
using Xunit;
using Xunit.Abstractions;

namespace CudaDream.Diffusion.Tests.Models;

public sealed class ExportTests(ITestOutputHelper output) : IDisposable
{
    private readonly TempDir _dir = Fixtures.TempDir();

    private string ImportTiny(string name = "model")
    {
        var dir = _dir.File(name);
        CheckpointImporter.Import(Fixtures.SdTiny("checkpoint.safetensors"), dir, ImportTests.TinyOptions());
        return dir;
    }

    [Fact]
    public void ImportExportImportIsTheIdentityOnTheWeights()
    {
        var model = ImportTiny();
        var ldm = _dir.File("exported.safetensors");
        ModelExporter.Export(model, ldm, new ExportOptions { Format = ExportFormat.Ldm });
        using (var original = SafetensorsFile.Open(Fixtures.SdTiny("checkpoint.safetensors")))
        using (var exported = SafetensorsFile.Open(ldm))
        {
            Assert.Equal(original.Names.Order(StringComparer.Ordinal), exported.Names.Order(StringComparer.Ordinal));
            foreach (var n in original.Names)
            {
                var a = original.Get(n);
                var b = exported.Get(n);
                Assert.Equal(a.Shape, b.Shape);
                Assert.Equal(a.DType, b.DType);
                Assert.True(a.Data.Span.SequenceEqual(b.Data.Span), n);
            }
        }
        var again = _dir.File("again");
        CheckpointImporter.Import(ldm, again, ImportTests.TinyOptions());
        foreach (var g in new[] { "unet", "text_encoder", "vae_encoder", "vae_decoder" })
        {
            var a = OnnxWeights.Read(Path.Combine(model, g, "model.onnx"));
            var b = OnnxWeights.Read(Path.Combine(again, g, "model.onnx"));
            Assert.Equal(a.Keys.Order(), b.Keys.Order());
            foreach (var k in a.Keys) Assert.True(a[k].Data.Span.SequenceEqual(b[k].Data.Span), $"{g}: {k}");
        }
    }

    [Fact]
    public void KohyaLoraMergedAtPointEightMatchesDiffusers()
    {
        var model = ImportTiny();
        var ldm = _dir.File("merged.safetensors");
        var lora = Fixtures.SdTiny("refs/lora_kohya.safetensors");
        var report = ModelExporter.Export(model, ldm, new ExportOptions { Format = ExportFormat.Ldm, Loras = [LoraSpec.Parse(lora + ":0.8")] });
        Assert.Equal(132, report.MergedModules);
        Assert.Empty(report.Warnings);

        using var original = SafetensorsFile.Open(Fixtures.SdTiny("checkpoint.safetensors"));
        using var merged = SafetensorsFile.Open(ldm);
        Assert.Equal(original.Names.Order(StringComparer.Ordinal), merged.Names.Order(StringComparer.Ordinal));
        foreach (var n in original.Names) Assert.Equal(original.Entry(n).Shape, merged.Entry(n).Shape);

        // diffusers' own merge (refs/pipeline_ddim_lora weight_merged.<module>)
        var refs = SafetensorsFile.ReadAll(Fixtures.SdTiny("refs/pipeline_ddim_lora.safetensors"));
        var unetNames = new Dictionary<string, string>();
        var config = Diffusion.Models.Builder.SdModelConfig.FromFolder(model);
        foreach (var row in CheckpointNames.Table(config)) if (row.Component == Components.UNet) unetNames[row.Diffusers] = row.Ldm;
        double worst = 0;
        foreach (var (key, expected) in refs.Where(kv => kv.Key.StartsWith("weight_merged.", StringComparison.Ordinal)))
        {
            var module = key["weight_merged.".Length..];
            var actual = merged.Get(unetNames[module + ".weight"]);
            double err = TensorAssert.RelativeMaxError(actual, expected);
            output.WriteLine($"{module}: {err:E2}");
            worst = Math.Max(worst, err);
            TensorAssert.Close(expected, actual, 1e-6, module);
        }
        Assert.Equal(6, refs.Keys.Count(k => k.StartsWith("weight_merged.", StringComparison.Ordinal)));

        // every adapted weight is W + 0.8·(alpha/rank)·up@down with the file's own numbers; everything else unchanged
        var kohya = SafetensorsFile.ReadAll(lora);
        int adapted = 0;
        foreach (var (diffusers, ldmKey) in unetNames)
        {
            var w = original.Get(ldmKey);
            var after = merged.Get(ldmKey);
            var name = "lora_unet_" + diffusers[..^".weight".Length].Replace('.', '_');
            if (!diffusers.EndsWith(".weight", StringComparison.Ordinal) || !kohya.ContainsKey(name + ".lora_down.weight"))
            {
                Assert.True(w.Data.Span.SequenceEqual(after.Data.Span), ldmKey);
                continue;
            }
            adapted++;
            var down = kohya[name + ".lora_down.weight"].ToFloat32Array();
            var up = kohya[name + ".lora_up.weight"].ToFloat32Array();
            float alpha = kohya[name + ".alpha"].ToFloat32Array()[0];
            int rank = kohya[name + ".lora_down.weight"].Shape[0];
            int outDim = w.Shape[0], inDim = w.Numel / outDim;
            var expected = w.ToFloat32Array();
            for (int o = 0; o < outDim; o++)
                for (int i = 0; i < inDim; i++)
                {
                    float s = 0;
                    for (int r = 0; r < rank; r++) s += up[o * rank + r] * down[r * inDim + i];
                    expected[o * inDim + i] += 0.8f * (alpha / rank) * s;
                }
            TensorAssert.Close(Tensor.FromArray(expected, w.Shape), after, 1e-6, ldmKey);
        }
        Assert.Equal(132, adapted);
        foreach (var n in original.Names.Where(n => !n.StartsWith("model.diffusion_model.", StringComparison.Ordinal)))
            Assert.True(original.Get(n).Data.Span.SequenceEqual(merged.Get(n).Data.Span), n);
    }

    [Fact]
    public void OnnxExportWithLoraReproducesTheLoraForward()
    {
        // refs/unet_lora_grad: out_sample of the UNet with the 88 attention LoRAs (scale 1) — the kohya file
        // carries exactly those weights (alpha 4 = rank) plus 44 more modules; write the 88 alone and merge at 1.0.
        var kohya = SafetensorsFile.ReadAll(Fixtures.SdTiny("refs/lora_kohya.safetensors"));
        var attentionOnly = kohya.Where(kv => kv.Key.Contains("_attn1_") || kv.Key.Contains("_attn2_")).ToDictionary(kv => kv.Key, kv => kv.Value);
        Assert.Equal(88 * 3, attentionOnly.Count);
        var lora = _dir.File("attn.safetensors");
        SafetensorsWriter.Write(lora, attentionOnly);

        var model = ImportTiny();
        var outDir = _dir.File("merged");
        var report = ModelExporter.Export(model, outDir, new ExportOptions { Format = ExportFormat.Onnx, Loras = [new LoraSpec(lora)] });
        Assert.Equal(88, report.MergedModules);
        var refs = SafetensorsFile.ReadAll(Fixtures.SdTiny("refs/unet_lora_grad.safetensors"));
        var o = OrtRunner.Run(Path.Combine(outDir, "unet/model.onnx"), new()
        {
            ["sample"] = refs["sample"], ["timestep"] = refs["timestep"], ["encoder_hidden_states"] = refs["encoder_hidden_states"],
        });
        double err = TensorAssert.RelativeMaxError(o["out_sample"], refs["out_sample"]);
        output.WriteLine($"unet with merged LoRA vs torch LoRA forward: {err:E2}");
        Assert.True(err <= 1e-4, $"{err:E2}");
        // and the rest of the folder is intact: the other graphs still reproduce their references
        var errors = ImportTests.CompareWithRefs(outDir, DType.F32);
        foreach (var k in new[] { "last_hidden_state", "vae_decoder.sample", "moments" }) Assert.True(errors[k] <= 1e-4, k);
    }

    [Fact]
    public void Fp16LdmExportHalvesEveryTensor()
    {
        var model = ImportTiny();
        var ldm = _dir.File("half.safetensors");
        ModelExporter.Export(model, ldm, new ExportOptions { Format = ExportFormat.Ldm, FloatType = DType.F16 });
        using var original = SafetensorsFile.Open(Fixtures.SdTiny("checkpoint.safetensors"));
        using var half = SafetensorsFile.Open(ldm);
        foreach (var n in original.Names)
        {
            var h = half.Get(n);
            Assert.Equal(DType.F16, h.DType);
            Assert.Equal(original.Get(n).To(DType.F16).Data.ToArray(), h.Data.ToArray());
        }
    }

    [Fact]
    public void LoraThatMatchesNothingIsAnError()
    {
        var model = ImportTiny();
        var lora = _dir.File("other.safetensors");
        SafetensorsWriter.Write(lora, new Dictionary<string, Tensor>
        {
            ["lora_unet_nothing_here.lora_down.weight"] = Tensor.Zeros(DType.F32, 4, 8),
            ["lora_unet_nothing_here.lora_up.weight"] = Tensor.Zeros(DType.F32, 8, 4),
        });
        var e = Assert.Throws<CudaDreamException>(() => ModelExporter.Export(model, _dir.File("x.safetensors"), new ExportOptions { Loras = [new LoraSpec(lora)] }));
        Assert.Contains("no key matches", e.Message);
        Assert.False(File.Exists(_dir.File("x.safetensors")));
    }

    [Theory]
    [InlineData("a.safetensors:0.8", "a.safetensors", 0.8f)]
    [InlineData("a.safetensors", "a.safetensors", 1f)]
    [InlineData(@"C:\loras\a.safetensors", @"C:\loras\a.safetensors", 1f)]
    [InlineData(@"C:\loras\a.safetensors:-0.5", @"C:\loras\a.safetensors", -0.5f)]
    public void LoraSpecParsing(string text, string path, float multiplier)
    {
        var s = LoraSpec.Parse(text);
        Assert.Equal(path, s.Path);
        Assert.Equal(multiplier, s.Multiplier);
    }

    public void Dispose() => _dir.Dispose();
}

public sealed class FineTunedWeightsExportTests : IDisposable
{
    private readonly TempDir _dir = Fixtures.TempDir();

    [Fact]
    public void FineTunedLayersReplaceTheModelsAndBadKeysAreListed()
    {
        var model = _dir.File("model");
        CheckpointImporter.Import(Fixtures.SdTiny("checkpoint.safetensors"), model, ImportTests.TinyOptions());
        var tuned = _dir.File("tuned.safetensors");
        var newQ = Tensor.FromArray(Enumerable.Range(0, 32 * 32).Select(i => i * 1e-3f).ToArray(), 32, 32);
        var newFc = Tensor.FromArray(Enumerable.Range(0, 64 * 32).Select(i => -i * 1e-3f).ToArray(), 64, 32);
        SafetensorsWriter.Write(tuned, new Dictionary<string, Tensor>
        {
            ["unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight"] = newQ,
            ["text_encoder.text_model.encoder.layers.1.mlp.fc1.weight"] = newFc,
        });
        var ldm = _dir.File("out.safetensors");
        ModelExporter.Export(model, ldm, new ExportOptions { WeightFiles = [tuned] });
        using (var f = SafetensorsFile.Open(ldm))
        {
            Assert.Equal(newQ.ToFloat32Array(), f.Get("model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight").ToFloat32Array());
            Assert.Equal(newFc.ToFloat32Array(), f.Get("cond_stage_model.transformer.text_model.encoder.layers.1.mlp.fc1.weight").ToFloat32Array());
        }

        var bad = _dir.File("bad.safetensors");
        SafetensorsWriter.Write(bad, new Dictionary<string, Tensor>
        {
            ["unet.not_a_layer.weight"] = newQ,
            ["unet.conv_in.weight"] = newQ,
        });
        var e = Assert.Throws<InvalidFileException>(() => ModelExporter.Export(model, _dir.File("x.safetensors"), new ExportOptions { WeightFiles = [bad] }));
        Assert.Contains("not_a_layer", e.Message);
        Assert.Contains("'unet.conv_in.weight' is [32,32]", e.Message);
    }

    public void Dispose() => _dir.Dispose();
}
