using CudaDream.Engine;
using CudaDream.Engine.Formats;
using CudaDream.Engine.Training;
using CudaDream.TestSupport;
using Xunit;

namespace CudaDream.Engine.Tests.Training;

/// <summary>
/// [E2] acceptance: gradients through the whole tiny UNet toward 88 rank-4 LoRA adapters and the input,
/// against PyTorch autograd (refs/unet_lora_grad.safetensors, diffusers' LoRALinearLayer).
/// </summary>
public class LoraGradientReferenceTests
{
    /// <summary>Runs `graph grad` on the fixture and compares loss, output, input gradient and the 176 LoRA gradients with PyTorch's.</summary>
    internal static void AssertMatchesTorch(bool fuse, bool checkpointing, CudaDream.Engine.ExecutionBackend? backend = null)
    {
        var refPath = Fixtures.SdTiny("refs/unet_lora_grad.safetensors");
        var refs = SafetensorsFile.ReadAll(refPath);
        var got = GraphGradient.Run(new GraphGradientRequest
        {
            Model = Fixtures.SdTiny("unet/model.onnx"), Tensors = refs, Target = "target", Lora = refPath,
            Wrt = new[] { "lora", "sample" }, Fuse = fuse, GradientCheckpointing = checkpointing,
            Backend = backend ?? CudaDream.Engine.ExecutionBackend.Cpu,
        });
        TensorAssert.Close(refs["loss"], got["loss"], 1e-4, "loss");
        TensorAssert.Close(refs["out_sample"], got["out_sample"], 1e-4, "out_sample");
        TensorAssert.Close(refs["sample.grad"], got["sample.grad"], 1e-4, "sample.grad");
        var loraGrads = refs.Keys.Where(k => k.EndsWith(".lora_down.weight.grad") || k.EndsWith(".lora_up.weight.grad")).ToList();
        Assert.Equal(176, loraGrads.Count);
        foreach (var k in loraGrads)
        {
            Assert.True(got.ContainsKey(k), $"missing {k}");
            TensorAssert.Close(refs[k], got[k], 1e-4, k);
        }
    }

    [Fact]
    public void FusedGraphMatchesPyTorchAutograd() => AssertMatchesTorch(fuse: true, checkpointing: false);

    [Fact]
    public void CheckpointedGraphMatchesPyTorchAutograd() => AssertMatchesTorch(fuse: true, checkpointing: true);
}

/// <summary>Selected-layer fine-tuning: gradients toward weights chosen by glob, checked against finite differences of the fp32 loss.</summary>
public class SelectedLayerGradientTests
{
    [Fact]
    public void WeightGlobGradientsMatchFiniteDifferences()
    {
        var refs = SafetensorsFile.ReadAll(Fixtures.SdTiny("refs/unet.safetensors"));
        var tensors = new Dictionary<string, CudaDream.Engine.Tensors.Tensor>(refs) { ["target"] = refs["out_sample"].Clone() };
        // Perturb the target so the loss is not at a minimum.
        var t = tensors["target"].Span<float>();
        for (int i = 0; i < t.Length; i++) t[i] += 0.05f * MathF.Sin(i);
        const string bias = "up_blocks.1.attentions.0.transformer_blocks.0.attn1.to_out.0.bias";
        var got = GraphGradient.Run(new GraphGradientRequest { Model = Fixtures.SdTiny("unet/model.onnx"), Tensors = tensors, Target = "target", Wrt = new[] { "up_blocks.1.*.attn1.to_out.0.bias" } });
        Assert.Equal(3, got.Keys.Count(k => k.EndsWith(".bias.grad")));
        var grad = got[bias + ".grad"].ToFloat32Array();

        // Loss at W ± h e_i through the inference path, in float64 arithmetic on the fp32 outputs.
        var graph = CudaDream.Engine.Graph.OnnxImporter.Load(Fixtures.SdTiny("unet/model.onnx"));
        var weight = graph.Weights[bias];
        weight.Constant = weight.Constant!.Clone(); // a writable copy; the session binds this buffer
        using var session = GraphSession.Create(graph, new Dictionary<string, int[]>
        {
            ["sample"] = refs["sample"].Shape, ["timestep"] = refs["timestep"].Shape, ["encoder_hidden_states"] = refs["encoder_hidden_states"].Shape,
        });
        var w = weight.Constant.Span<float>();
        var target = tensors["target"].ToFloat32Array();
        double Loss()
        {
            var o = session.Run(refs)["out_sample"].ToFloat32Array();
            return o.Select((v, i) => (double)(v - target[i]) * (v - target[i])).Average();
        }
        foreach (int i in new[] { 0, 7, 31 })
        {
            float orig = w[i];
            const float h = 1e-2f;
            w[i] = orig + h; double lp = Loss();
            w[i] = orig - h; double lm = Loss();
            w[i] = orig;
            double numeric = (lp - lm) / (2 * h);
            Assert.True(Math.Abs(grad[i] - numeric) <= 2e-3 * Math.Abs(numeric) + 1e-7, $"d loss/d {bias}[{i}]: {grad[i]} vs finite difference {numeric}");
        }
    }
}
