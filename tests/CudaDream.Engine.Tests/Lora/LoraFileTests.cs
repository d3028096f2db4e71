using CudaDream.Engine;
using CudaDream.Engine.Formats;
using CudaDream.Engine.Tensors;
using CudaDream.Engine.Training.Lora;
using CudaDream.TestSupport;
using Xunit;

namespace CudaDream.Engine.Tests.Lora;

public sealed class LoraFileTests : IDisposable
{
    private readonly TempDir _dir = Fixtures.TempDir();

    private static readonly LoraTarget Linear = new(LoraComponents.UNet, "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q", [6, 5]);
    private static readonly LoraTarget Conv = new(LoraComponents.UNet, "down_blocks.0.attentions.0.proj_in", [6, 5, 3, 3]);
    private static readonly LoraTarget Conv1x1 = new(LoraComponents.UNet, "down_blocks.0.attentions.0.proj_out", [6, 6, 1, 1]);
    private static readonly LoraTarget Text = new(LoraComponents.TextEncoder, "text_model.encoder.layers.0.self_attn.q_proj", [6, 6]);
    private static readonly LoraTarget[] Targets = [Linear, Conv, Conv1x1, Text];

    private static Tensor Random(int seed, params int[] shape)
    {
        var rng = new Random(seed);
        return Tensor.FromArray(Enumerable.Range(0, (int)Shapes.Numel(shape)).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray(), shape);
    }

    private string Write(Dictionary<string, Tensor> tensors)
    {
        var p = _dir.File(Guid.NewGuid().ToString("N") + ".safetensors");
        SafetensorsWriter.Write(p, tensors);
        return p;
    }

    [Fact]
    public void KohyaDiffusersPeftAndOwnKeysResolveToTheSameAdapters()
    {
        var down = Random(1, 2, 5);
        var up = Random(2, 6, 2);
        var tdown = Random(3, 2, 6);
        var tup = Random(4, 6, 2);
        var layouts = new[]
        {
            new Dictionary<string, Tensor>
            {
                ["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight"] = down,
                ["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_up.weight"] = up,
                ["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.alpha"] = Tensor.FromArray(new[] { 2f }, Array.Empty<int>()),
                ["lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight"] = tdown,
                ["lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight"] = tup,
            },
            new Dictionary<string, Tensor>
            {
                ["unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora.down.weight"] = down,
                ["unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora.up.weight"] = up,
                ["unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.alpha"] = Tensor.FromArray(new[] { 2f }, 1),
                ["text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora.down.weight"] = tdown,
                ["text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora.up.weight"] = tup,
            },
            new Dictionary<string, Tensor>
            {
                ["base_model.model.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight"] = down,
                ["base_model.model.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_B.weight"] = up,
                ["base_model.model.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.alpha"] = Tensor.FromArray(new[] { 2f }, Array.Empty<int>()),
                ["text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight"] = tdown,
                ["text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_B.weight"] = tup,
            },
            new Dictionary<string, Tensor>
            {
                ["down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_down.weight"] = down,
                ["down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_up.weight"] = up,
                ["down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.alpha"] = Tensor.FromArray(new[] { 2f }, Array.Empty<int>()),
                ["text_model.encoder.layers.0.self_attn.q_proj.lora_down.weight"] = tdown,
                ["text_model.encoder.layers.0.self_attn.q_proj.lora_up.weight"] = tup,
            },
        };
        foreach (var layout in layouts)
        {
            var r = LoraFile.Load(Write(layout), Targets);
            Assert.Empty(r.UnmatchedKeys);
            Assert.Equal(2, r.Adapters.Count);
            var u = r.Adapters.Single(a => a.Component == LoraComponents.UNet);
            Assert.Equal(Linear.ModulePath, u.ModulePath);
            Assert.Equal(2, u.Rank);
            Assert.Equal(2f, u.Alpha);
            Assert.Equal(down.ToFloat32Array(), u.Down.ToFloat32Array());
            Assert.Equal(up.ToFloat32Array(), u.Up.ToFloat32Array());
            var t = r.Adapters.Single(a => a.Component == LoraComponents.TextEncoder);
            Assert.Equal(2f, t.Alpha); // no alpha in the file: alpha = rank
            Assert.Equal(Text.ModulePath, t.ModulePath);
        }
    }

    [Fact]
    public void UnmatchedKeysAreReportedNotDropped()
    {
        var p = Write(new()
        {
            ["lora_unet_down_blocks_0_attentions_0_proj_out.lora_down.weight"] = Random(1, 2, 6, 1, 1),
            ["lora_unet_down_blocks_0_attentions_0_proj_out.lora_up.weight"] = Random(2, 6, 2, 1, 1),
            ["lora_unet_mid_block_attentions_0_proj_out.lora_down.weight"] = Random(3, 2, 6, 1, 1),
            ["some_other_key"] = Random(4, 3),
        });
        var r = LoraFile.Load(p, Targets);
        Assert.Single(r.Adapters);
        Assert.Equal(new[] { "lora_unet_mid_block_attentions_0_proj_out.lora_down.weight", "some_other_key" }, r.UnmatchedKeys);
    }

    [Fact]
    public void MissingHalfAndMisshapedTensorsNameTheKey()
    {
        var p = Write(new() { ["lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight"] = Random(1, 2, 5, 3, 3) });
        var e = Assert.Throws<CudaDreamException>(() => LoraFile.Load(p, Targets));
        Assert.Contains("lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight", e.Message);
        Assert.Contains("up half", e.Message);

        p = Write(new()
        {
            ["lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight"] = Random(1, 2, 5, 1, 1),
            ["lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight"] = Random(2, 6, 2, 1, 1),
        });
        e = Assert.Throws<CudaDreamException>(() => LoraFile.Load(p, Targets));
        Assert.Contains("lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight", e.Message);
        Assert.Contains("[2,5,3,3]", e.Message);
    }

    /// <summary>
    /// The merged weight computes what the adapter computes: W'x = Wx + m·(α/r)·Up(Down x) (the LoRA
    /// forward of Hu et al. eq. 3), for a linear and for a 3×3 conv evaluated as im2col rows.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void MergedWeightEqualsTheAdapterForward(bool conv)
    {
        var target = conv ? Conv : Linear;
        int outDim = 6, inDim = conv ? 45 : 5, rank = 2;
        var w = Random(5, target.WeightShape);
        var adapter = new LoraAdapter(target.ModulePath, target.Component, Random(6, conv ? [rank, 5, 3, 3] : [rank, 5]),
            Random(7, conv ? [outDim, rank, 1, 1] : [outDim, rank]), Alpha: 3f, Rank: rank);
        var merged = LoraMerge.Apply(w, adapter, 0.8f).ToFloat32Array();
        var x = Random(8, inDim).ToFloat32Array();
        var W = w.ToFloat32Array();
        var D = adapter.Down.ToFloat32Array();
        var U = adapter.Up.ToFloat32Array();
        var dx = new double[rank];
        for (int r = 0; r < rank; r++) for (int i = 0; i < inDim; i++) dx[r] += D[r * inDim + i] * x[i];
        for (int o = 0; o < outDim; o++)
        {
            double viaAdapter = 0, viaMerged = 0;
            for (int i = 0; i < inDim; i++) { viaAdapter += W[o * inDim + i] * x[i]; viaMerged += merged[o * inDim + i] * x[i]; }
            for (int r = 0; r < rank; r++) viaAdapter += 0.8 * 3.0 / rank * U[o * rank + r] * dx[r];
            Assert.Equal(viaAdapter, viaMerged, 1e-5);
        }
    }

    [Fact]
    public void KohyaWriterRoundTripsThroughTheLoader()
    {
        var a = new LoraAdapter(Conv1x1.ModulePath, Conv1x1.Component, Random(1, 4, 6, 1, 1), Random(2, 6, 4, 1, 1), 2f, 4);
        var b = new LoraAdapter(Text.ModulePath, Text.Component, Random(3, 4, 6), Random(4, 6, 4), 4f, 4);
        var p = _dir.File("out.safetensors");
        LoraWriter.WriteKohya(p, [a, b], new Dictionary<string, string> { ["ss_output_name"] = "test" });
        using (var f = SafetensorsFile.Open(p))
        {
            Assert.Equal("networks.lora", f.Metadata["ss_network_module"]);
            Assert.Equal("4", f.Metadata["ss_network_dim"]);
            Assert.Equal("Dynamic", f.Metadata["ss_network_alpha"]);
            Assert.Equal("test", f.Metadata["ss_output_name"]);
            Assert.Contains("lora_te_text_model_encoder_layers_0_self_attn_q_proj.alpha", f.Names);
        }
        var r = LoraFile.Load(p, Targets);
        Assert.Empty(r.UnmatchedKeys);
        var back = r.Adapters.Single(x => x.ModulePath == a.ModulePath);
        Assert.Equal(a.Down.ToFloat32Array(), back.Down.ToFloat32Array());
        Assert.Equal(2f, back.Alpha);
    }

    public void Dispose() => _dir.Dispose();
}
