using System.Text.Json;
using CudaDream.Diffusion.Models;
using CudaDream.Diffusion.Models.Builder;
using CudaDream.Engine.Formats;
using CudaDream.TestSupport;
using Xunit;

namespace CudaDream.Diffusion.Tests.Models;

public sealed class CheckpointNamesTests
{
    /// <summary>The table reproduces diffusers' convert_diffusers_to_original_stable_diffusion.py map (refs/checkpoint_keys.json) key for key.</summary>
    [Fact]
    public void TableEqualsDiffusersConverterMap()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Fixtures.SdTiny("refs/checkpoint_keys.json")));
        var expected = doc.RootElement.GetProperty("key_map").EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetString()!);
        Assert.Equal(730, expected.Count);
        var table = CheckpointNames.Table(SdModelConfig.FromFolder(Fixtures.SdTiny("configs")));
        var actual = table.ToDictionary(r => r.Ldm, r => $"{r.Component}:{r.Diffusers}");
        Assert.Equal(expected.Keys.Order(StringComparer.Ordinal), actual.Keys.Order(StringComparer.Ordinal));
        foreach (var (ldm, diffusers) in expected) Assert.Equal(diffusers, actual[ldm]);

        // shapes: the checkpoint's own, with the 16 reshaped VAE attention tensors as 1×1 convs
        var reshaped = doc.RootElement.GetProperty("reshaped").EnumerateObject().Select(p => p.Name).ToHashSet();
        using var ck = SafetensorsFile.Open(Fixtures.SdTiny("checkpoint.safetensors"));
        foreach (var row in table)
        {
            Assert.Equal(ck.Entry(row.Ldm).Shape, row.LdmShape);
            Assert.Equal(reshaped.Contains(row.Ldm), row.IsConvInLdm);
        }
    }

    /// <summary>SD 1.5's layout: the 4-level, 2-layer indices of diffusers' converter (which hard-codes them).</summary>
    [Theory]
    [InlineData("down_blocks.3.resnets.1.conv2.weight", "input_blocks.11.0.out_layers.3.weight")]
    [InlineData("down_blocks.2.downsamplers.0.conv.weight", "input_blocks.9.0.op.weight")]
    [InlineData("down_blocks.1.attentions.1.proj_in.weight", "input_blocks.5.1.proj_in.weight")]
    [InlineData("up_blocks.0.upsamplers.0.conv.bias", "output_blocks.2.1.conv.bias")]
    [InlineData("up_blocks.1.upsamplers.0.conv.bias", "output_blocks.5.2.conv.bias")]
    [InlineData("up_blocks.3.attentions.2.transformer_blocks.0.attn2.to_k.weight", "output_blocks.11.1.transformer_blocks.0.attn2.to_k.weight")]
    [InlineData("mid_block.resnets.1.time_emb_proj.weight", "middle_block.2.emb_layers.1.weight")]
    [InlineData("mid_block.attentions.0.norm.weight", "middle_block.1.norm.weight")]
    [InlineData("up_blocks.2.resnets.0.conv_shortcut.weight", "output_blocks.6.0.skip_connection.weight")]
    public void Sd15UNetKeys(string diffusers, string ldm) =>
        Assert.Equal(ldm, CheckpointNames.UNetToLdm(diffusers, UNetConfig.Sd15));

    [Theory]
    [InlineData("decoder.up_blocks.0.resnets.2.conv1.weight", "decoder.up.3.block.2.conv1.weight")]
    [InlineData("decoder.up_blocks.2.upsamplers.0.conv.weight", "decoder.up.1.upsample.conv.weight")]
    [InlineData("encoder.down_blocks.1.resnets.0.conv_shortcut.weight", "encoder.down.1.block.0.nin_shortcut.weight")]
    [InlineData("encoder.mid_block.attentions.0.to_out.0.bias", "encoder.mid.attn_1.proj_out.bias")]
    [InlineData("decoder.conv_norm_out.weight", "decoder.norm_out.weight")]
    public void Sd15VaeKeys(string diffusers, string ldm) =>
        Assert.Equal(ldm, CheckpointNames.VaeToLdm(diffusers, VaeConfig.Sd15));

    [Fact]
    public void Sd15TableHasTheWholeModel()
    {
        var table = CheckpointNames.Table(SdModelConfig.Sd15);
        Assert.Equal(686, table.Count(r => r.Component == Components.UNet));
        Assert.Equal(196, table.Count(r => r.Component == Components.TextEncoder));
        Assert.Equal(table.Count, table.Select(r => r.Ldm).Distinct().Count());
    }
}
