using System.Text.Json;
using CudaDream.Engine.Formats;
using CudaDream.TestSupport;
using Xunit;

namespace CudaDream.Cli.Tests;

[Collection("Console")]
public class GraphCommandTests
{
    [Fact]
    public void GraphRunReproducesTheTextEncoderReference()
    {
        using var dir = Fixtures.TempDir();
        var outPath = dir.File("out.safetensors");
        var (code, stdout, stderr) = CliRunner.Run("graph", "run", "--model", Fixtures.SdTiny("text_encoder/model.onnx"),
            "--inputs", Fixtures.SdTiny("refs/text_encoder.safetensors"), "--out", outPath);
        Assert.True(code == 0, stderr);
        Assert.Contains("last_hidden_state", stdout);
        var refs = SafetensorsFile.ReadAll(Fixtures.SdTiny("refs/text_encoder.safetensors"));
        var got = SafetensorsFile.ReadAll(outPath);
        TensorAssert.Close(refs["last_hidden_state"], got["last_hidden_state"], 1e-4, "last_hidden_state");
        TensorAssert.Close(refs["pooler_output"], got["pooler_output"], 1e-4, "pooler_output");
    }

    [Fact]
    public void GraphRunReturnsAliasedIntermediateValues()
    {
        using var dir = Fixtures.TempDir();
        var outPath = dir.File("enc.safetensors");
        var (code, _, stderr) = CliRunner.Run("graph", "run", "--model", Fixtures.SdTiny("vae_encoder/model.onnx"),
            "--inputs", Fixtures.SdTiny("refs/vae_encoder.safetensors"), "--out", outPath,
            "--outputs", "moments=/quant_conv/Conv_output_0,mean=/Slice_output_0", "--seed", "7");
        Assert.True(code == 0, stderr);
        var refs = SafetensorsFile.ReadAll(Fixtures.SdTiny("refs/vae_encoder.safetensors"));
        var got = SafetensorsFile.ReadAll(outPath);
        TensorAssert.Close(refs["moments"], got["moments"], 1e-4, "moments");
        TensorAssert.Close(refs["mean"], got["mean"], 1e-4, "mean");
        Assert.True(got.ContainsKey("latent_sample"));
    }

    [Fact]
    public void MissingInputIsOneLineErrorAndNoOutput()
    {
        using var dir = Fixtures.TempDir();
        var outPath = dir.File("out.safetensors");
        var (code, _, stderr) = CliRunner.Run("graph", "run", "--model", Fixtures.SdTiny("unet/model.onnx"),
            "--inputs", Fixtures.SdTiny("refs/text_encoder.safetensors"), "--out", outPath);
        Assert.Equal(1, code);
        Assert.Single(stderr.Trim().Split('\n'));
        Assert.Contains("missing graph input(s) sample, timestep, encoder_hidden_states", stderr);
        Assert.False(File.Exists(outPath));
    }

    [Fact]
    public void UnknownBackendIsRefused()
    {
        var (code, _, stderr) = CliRunner.Run("graph", "run", "--model", "m.onnx", "--inputs", "i.safetensors", "--out", "o.safetensors", "--backend", "tpu");
        Assert.Equal(1, code);
        Assert.Contains("--backend 'tpu'", stderr);
    }

    [Fact]
    public void InspectPrintsJsonForTheSd15UNet()
    {
        var (code, stdout, stderr) = CliRunner.Run("inspect", Fixtures.Path("sd15-structure/unet/model.onnx"),
            "--shape", "sample=1,4,64,64", "--shape", "timestep=1", "--shape", "encoder_hidden_states=1,77,768", "--json");
        Assert.True(code == 0, stderr);
        using var doc = JsonDocument.Parse(stdout);
        var ops = doc.RootElement.GetProperty("ops_after");
        Assert.Equal(32, ops.GetProperty("Attention").GetInt32());
        Assert.Equal(61, ops.GetProperty("GroupNorm").GetInt32());
        Assert.Equal(16, ops.GetProperty("Geglu").GetInt32());
        Assert.Equal(0, doc.RootElement.GetProperty("remaining_shape_arithmetic").GetInt32());
        Assert.Equal(859_520_964, doc.RootElement.GetProperty("parameters").GetInt64());
    }

    [Fact]
    public void InspectWithoutShapesSaysWhichAreNeeded()
    {
        var (code, stdout, _) = CliRunner.Run("inspect", Fixtures.SdTiny("unet/model.onnx"));
        Assert.Equal(0, code);
        Assert.Contains("give --shape for sample, timestep, encoder_hidden_states", stdout);
        Assert.Contains("2,164,452", stdout);
    }

    [Fact]
    public void MissingModelFileIsOneLineError()
    {
        var (code, _, stderr) = CliRunner.Run("inspect", "no/such/model.onnx");
        Assert.Equal(1, code);
        Assert.Contains("no/such/model.onnx: file not found", stderr);
    }
}

[Collection("Console")]
public class GraphGradCommandTests
{
    [Fact]
    public void GraphGradReproducesTheLoraGradientReference()
    {
        using var dir = Fixtures.TempDir();
        var outPath = dir.File("grads.safetensors");
        var refPath = Fixtures.SdTiny("refs/unet_lora_grad.safetensors");
        var (code, stdout, stderr) = CliRunner.Run("graph", "grad", "--model", Fixtures.SdTiny("unet/model.onnx"), "--inputs", refPath,
            "--target", "target", "--loss", "mse", "--lora", refPath, "--wrt", "lora,sample", "--out", outPath);
        Assert.True(code == 0, stderr);
        Assert.Contains("177 gradients", stdout);
        var refs = SafetensorsFile.ReadAll(refPath);
        var got = SafetensorsFile.ReadAll(outPath);
        foreach (var k in refs.Keys.Where(k => k.EndsWith(".grad") || k is "loss" or "out_sample"))
            TensorAssert.Close(refs[k], got[k], 1e-4, k);
    }

    [Fact]
    public void MisshapedLoraTensorIsRefusedNamingTheKey()
    {
        using var dir = Fixtures.TempDir();
        var refPath = Fixtures.SdTiny("refs/unet_lora_grad.safetensors");
        var tensors = SafetensorsFile.ReadAll(refPath);
        const string key = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_up.weight";
        tensors[key] = CudaDream.Engine.Tensors.Tensor.Zeros(CudaDream.Engine.Tensors.DType.F32, 31, 4);
        var bad = dir.File("bad.safetensors");
        SafetensorsWriter.Write(bad, tensors);
        var (code, _, stderr) = CliRunner.Run("graph", "grad", "--model", Fixtures.SdTiny("unet/model.onnx"), "--inputs", bad,
            "--target", "target", "--lora", bad, "--out", dir.File("g.safetensors"));
        Assert.Equal(1, code);
        Assert.Contains(key, stderr);
        Assert.False(File.Exists(dir.File("g.safetensors")));
    }

    [Fact]
    public void LoraKeyForAnUnknownModuleIsRefused()
    {
        using var dir = Fixtures.TempDir();
        var refPath = Fixtures.SdTiny("refs/unet_lora_grad.safetensors");
        var tensors = SafetensorsFile.ReadAll(refPath);
        tensors["down_blocks.7.attentions.0.to_q.lora_down.weight"] = CudaDream.Engine.Tensors.Tensor.Zeros(CudaDream.Engine.Tensors.DType.F32, 4, 32);
        var bad = dir.File("bad.safetensors");
        SafetensorsWriter.Write(bad, tensors);
        var (code, _, stderr) = CliRunner.Run("graph", "grad", "--model", Fixtures.SdTiny("unet/model.onnx"), "--inputs", bad,
            "--target", "target", "--lora", bad, "--out", dir.File("g.safetensors"));
        Assert.Equal(1, code);
        Assert.Contains("down_blocks.7.attentions.0.to_q.lora_down.weight", stderr);
    }

    [Fact]
    public void MissingLoraHalfIsRefused()
    {
        using var dir = Fixtures.TempDir();
        var refPath = Fixtures.SdTiny("refs/unet_lora_grad.safetensors");
        var tensors = SafetensorsFile.ReadAll(refPath);
        tensors.Remove("mid_block.attentions.0.transformer_blocks.0.attn2.to_v.lora_up.weight");
        var bad = dir.File("bad.safetensors");
        SafetensorsWriter.Write(bad, tensors);
        var (code, _, stderr) = CliRunner.Run("graph", "grad", "--model", Fixtures.SdTiny("unet/model.onnx"), "--inputs", bad,
            "--target", "target", "--lora", bad, "--out", dir.File("g.safetensors"));
        Assert.Equal(1, code);
        Assert.Contains("mid_block.attentions.0.transformer_blocks.0.attn2.to_v", stderr);
    }
}

[Collection("Console")]
public class BenchCommandTests
{
    /// <summary>bench reports each measurement with its FLOP rate and planned memory (values are the machine's; only their presence is checked).</summary>
    [Fact]
    public void BenchReportsForwardAndTrainingStep()
    {
        var (code, stdout, stderr) = CliRunner.Run("bench", "--model", Fixtures.SdTiny(), "--what", "forward,train", "--repeats", "1", "--size", "64", "--json");
        Assert.True(code == 0, stderr);
        using var doc = JsonDocument.Parse(stdout);
        var results = doc.RootElement.GetProperty("results").EnumerateArray().ToList();
        Assert.Equal(new[] { "unet forward b1 64x64 fp32 (cpu)", "lora train step b1 64x64", "lora train step b1 64x64 ckpt" }, results.Select(r => r.GetProperty("name").GetString()));
        Assert.All(results, r => Assert.True(r.GetProperty("median_seconds").GetDouble() > 0));
        Assert.All(results, r => Assert.True(r.GetProperty("planned_bytes").GetInt64() > 0));
        // Checkpointing trades time for memory: its planned arena is smaller.
        Assert.True(results[2].GetProperty("planned_bytes").GetInt64() < results[1].GetProperty("planned_bytes").GetInt64());
    }

    /// <summary>
    /// --profile attributes the run to op types: each op type once, slowest first, the backward's only in the step, and the
    /// GFLOP/s of an op type its own multiply-adds over its own time.
    /// </summary>
    [Fact]
    public void BenchProfileTimesEveryOpTypeWithItsOwnRate()
    {
        var (code, stdout, stderr) = CliRunner.Run("bench", "--model", Fixtures.SdTiny(), "--what", "forward,train", "--repeats", "1", "--size", "64", "--profile", "--json");
        Assert.True(code == 0, stderr);
        using var doc = JsonDocument.Parse(stdout);
        var results = doc.RootElement.GetProperty("results").EnumerateArray().ToList();
        Assert.Equal(3, results.Count);
        foreach (var r in results)
        {
            var ops = r.GetProperty("profile").EnumerateArray().ToList();
            var names = ops.Select(o => o.GetProperty("op").GetString()).ToList();
            Assert.Contains("Conv", names);
            Assert.Contains("Attention", names);
            Assert.Equal(names.Distinct().Count(), names.Count);
            var seconds = ops.Select(o => o.GetProperty("seconds").GetDouble()).ToList();
            Assert.Equal(seconds.OrderByDescending(x => x), seconds); // slowest first
            foreach (var o in ops.Where(o => o.GetProperty("multiply_adds").GetInt64() > 0))
                Assert.Equal(2.0 * o.GetProperty("multiply_adds").GetInt64() / o.GetProperty("seconds").GetDouble() / 1e9, o.GetProperty("gflops_per_second").GetDouble(), 6);
        }
        // The step's profile holds the backward's op types, the forward's does not.
        Assert.DoesNotContain(results[0].GetProperty("profile").EnumerateArray(), o => o.GetProperty("op").GetString() == "ConvGradInput");
        Assert.Contains(results[1].GetProperty("profile").EnumerateArray(), o => o.GetProperty("op").GetString() == "ConvGradInput");
        // Without --profile there is none.
        var (_, plain, _) = CliRunner.Run("bench", "--model", Fixtures.SdTiny(), "--what", "forward", "--repeats", "1", "--size", "64", "--json");
        using var plainDoc = JsonDocument.Parse(plain);
        Assert.Equal(JsonValueKind.Null, plainDoc.RootElement.GetProperty("results")[0].GetProperty("profile").ValueKind);
    }

    [Fact]
    public void BenchRefusesAnUnknownMeasurement()
    {
        var (code, _, stderr) = CliRunner.Run("bench", "--model", Fixtures.SdTiny(), "--what", "everything");
        Assert.Equal(1, code);
        Assert.Contains("unknown measurement 'everything'", stderr);
    }
}

[Collection("Console")]
public class BenchCompareTests
{
    /// <summary>
    /// bench --compare times the same forward in CudaDream and ONNX Runtime (values are the machine's; only their presence and the
    /// ratio's definition are checked), says how to get the PyTorch rows when they are not built, and writes the JSON and the chart.
    /// </summary>
    [Fact]
    public void Compare_times_cudadream_and_onnx_runtime_on_the_same_graph_and_writes_json_and_chart()
    {
        using var dir = Fixtures.TempDir();
        var (code, stdout, stderr) = CliRunner.Run("bench", "--compare", "--model", Fixtures.SdTiny(), "--what", "forward,train", "--repeats", "1",
            "--size", "64", "--out", dir.FullName, "--json");
        Assert.True(code == 0, stderr);
        using var doc = JsonDocument.Parse(stdout);
        var rows = doc.RootElement.GetProperty("rows").EnumerateArray().ToList();
        JsonElement Row(string measurement, string library) =>
            rows.Single(r => r.GetProperty("measurement").GetString() == measurement && r.GetProperty("library").GetString()!.StartsWith(library, StringComparison.Ordinal));
        var ours = Row("unet forward b1 64x64", "CudaDream");
        var ort = Row("unet forward b1 64x64", "ONNX Runtime");
        Assert.Equal(1.0, ours.GetProperty("ratio_to_cuda_dream").GetDouble());
        Assert.True(ort.GetProperty("median_seconds").GetDouble() > 0);
        Assert.Equal(ort.GetProperty("median_seconds").GetDouble() / ours.GetProperty("median_seconds").GetDouble(), ort.GetProperty("ratio_to_cuda_dream").GetDouble(), 9);
        Assert.True(Row("lora train step b1 64x64", "CudaDream").GetProperty("median_seconds").GetDouble() > 0);
        var torch = Row("lora train step b1 64x64", "PyTorch");
        if (torch.GetProperty("median_seconds").ValueKind == JsonValueKind.Null)
            Assert.Contains("./build.sh bench-compare", torch.GetProperty("note").GetString());
        Assert.True(File.Exists(dir.File("compare.json")));
        var png = File.ReadAllBytes(dir.File("compare.png"));
        Assert.True(png.Length > 1000 && png[1] == (byte)'P' && png[2] == (byte)'N' && png[3] == (byte)'G');
    }
}
