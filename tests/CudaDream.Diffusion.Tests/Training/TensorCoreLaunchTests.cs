using CudaDream.Engine;
using CudaDream.Engine.Backends;
using CudaDream.Engine.Backends.Device;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Tensors;
using CudaDream.Engine.Training;
using CudaDream.Engine.Training.Lora;
using CudaDream.TestSupport;
using Xunit;
using Xunit.Abstractions;

namespace CudaDream.Diffusion.Tests.Training;

/// <summary>
/// [G1] a bf16 LoRA training step of the full SD 1.5 UNet at 512 px (the sd15-structure graph, its absent weights as
/// constants) planned and issued on a <see cref="RecordingDevice"/>: every GEMM of the step — the convolutions' im2col
/// GEMMs, the linears, the LoRA products and all their backward GEMMs — takes the tensor-core path (bf16 operands, fp32
/// accumulation in cuBLAS), and no convolution loops over the images of the batch.
/// </summary>
public class TensorCoreLaunchTests(ITestOutputHelper output)
{
    private static List<RecordedLaunch> Sd15TrainingStep(int batch, DType compute)
    {
        var g = OnnxImporter.Load(Fixtures.Path("sd15-structure/unet/model.onnx"), loadExternalData: false);
        var shapes = new Dictionary<string, int[]>
        {
            ["sample"] = [batch, 4, 64, 64], ["timestep"] = [batch], ["encoder_hidden_states"] = [batch, 77, 768],
        };
        GraphPasses.Prepare(g, shapes, fuse: true);
        // The fixture's weights were deleted: equal constants stand in (what runs does not depend on their values).
        foreach (var v in g.Nodes.SelectMany(n => n.Inputs).OfType<Value>().Where(v => v.IsWeight && v.Constant == null && v.Splat == null).Distinct().ToList())
            v.Splat = 0.01;
        var targets = LoraTargetSelector.Select(GraphLora.Targets(g, LoraComponents.UNet), ["attention"]);
        var attached = GraphLora.Attach(g, GraphLora.Initialize(targets, 4, 4, 1));
        var trainable = attached.SelectMany(a => new[] { a.Down, a.Up }).ToList();
        if (compute != DType.F32) MixedPrecision.Apply(g, compute, trainable);
        var tg = TrainingGraph.Build(g, trainable, new TrainingGraphOptions { PerSampleWeights = true });
        using var device = new RecordingDevice(90);
        using var executor = new DeviceExecutor(ExecutionPlan.Create(tg.Graph), device);
        device.Launches.Clear(); // the constants' fills
        var inputs = tg.Graph.Inputs.ToDictionary(i => i.Name, i => Tensor.Zeros(i.DType, i.Shape!));
        executor.Run(inputs, [tg.Loss]);
        return device.Launches;
    }

    /// <summary>The bf16 step's launches, planned once for the tests that read them.</summary>
    private static readonly Lazy<List<RecordedLaunch>> Bf16Step = new(() => Sd15TrainingStep(batch: 2, DType.BF16));

    [Fact]
    public void Every_gemm_of_a_bf16_sd15_training_step_runs_on_tensor_cores()
    {
        var launches = Bf16Step.Value;
        var gemms = launches.Where(l => l.IsGemm).Select(l => l.Gemm!.Value).ToList();
        double flops = gemms.Sum(x => 2.0 * x.M * x.N * x.K * x.Batch);
        output.WriteLine($"{launches.Count} launches, {gemms.Count} GEMMs ({flops / 1e12:F2} TFLOP), {launches.Count(l => l.Kernel.StartsWith("im2col", StringComparison.Ordinal))} im2col");
        foreach (var group in launches.Where(l => !l.IsGemm).GroupBy(l => l.Kernel).OrderByDescending(x => x.Count()).Take(12))
            output.WriteLine($"  {group.Key}: {group.Count()}");
        Assert.True(gemms.Count > 500, $"{gemms.Count} GEMMs");
        var fp32 = gemms.Where(x => x.Type is not (DType.BF16 or DType.F16)).ToList();
        Assert.True(fp32.Count == 0, $"{fp32.Count} GEMMs are not on tensor cores, e.g. {string.Join("; ", fp32.Take(3))}");
        // A convolution is one batched im2col and one GEMM over the whole batch (its weight gradient may loop).
        var conv = launches.Where(l => l.Kernel.StartsWith("im2col", StringComparison.Ordinal)).ToList();
        Assert.NotEmpty(conv);
        var fp32Kernels = launches.Where(l => !l.IsGemm && l.Kernel.EndsWith("_f32", StringComparison.Ordinal) && l.Kernel.StartsWith("im2col", StringComparison.Ordinal)).ToList();
        Assert.Empty(fp32Kernels);
    }

    /// <summary>
    /// [G2] SD 1.5's 32 attentions (heads 40, 80 and 160 wide; self-attention over 4096…64 tokens, cross-attention over 77)
    /// run the FlashAttention-2 tensor-core kernels forward and backward, none of the fp32-math attention kernels.
    /// </summary>
    [Fact]
    public void Every_attention_of_a_bf16_sd15_training_step_takes_the_tensor_core_kernels()
    {
        var launches = Bf16Step.Value.Where(l => l.Kernel.StartsWith("attention_", StringComparison.Ordinal)).ToList();
        foreach (var group in launches.GroupBy(l => l.Kernel).OrderBy(x => x.Key))
            output.WriteLine($"  {group.Key}: {group.Count()}");
        int Count(string kernel) => launches.Count(l => l.Kernel == kernel);
        Assert.Equal(10, Count("attention_mma_forward_d64_bf16"));  // 40-wide heads
        Assert.Equal(10, Count("attention_mma_forward_d80_bf16"));  // 80-wide
        Assert.Equal(12, Count("attention_mma_forward_d160_bf16")); // 160-wide
        Assert.Equal(10, Count("attention_mma_backward_dq_d64_bf16"));
        Assert.Equal(10, Count("attention_mma_backward_dq_d80_bf16"));
        Assert.Equal(12, Count("attention_mma_backward_dq_d160_bf16"));
        Assert.Equal(10, Count("attention_mma_backward_dkv_d64_bf16"));
        Assert.Equal(10, Count("attention_mma_backward_dkv_d80_bf16"));
        Assert.Equal(12, Count("attention_mma_backward_dkv_wide_d160_bf16"));
        Assert.Equal(32, Count("attention_backward_dot_bf16")); // delta = rowsum(dO∘O), memory-bound
        Assert.Equal(32 * 4, launches.Count);
    }

    [Fact]
    public void The_fp32_reference_step_stays_in_fp32()
    {
        var gemms = Sd15TrainingStep(batch: 1, DType.F32).Where(l => l.IsGemm).Select(l => l.Gemm!.Value).ToList();
        Assert.All(gemms, x => Assert.Equal(DType.F32, x.Type));
    }
}
