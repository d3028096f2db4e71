using System.Diagnostics;
using CudaDream.Engine.Backends.Device;
using CudaDream.Engine.Formats;
using CudaDream.Engine.Tensors;
using CudaDream.TestSupport;
using Xunit;
using Xunit.Abstractions;
namespace CudaDream.Engine.Tests.Device;
public class TmpEmuBench(ITestOutputHelper log)
{
    [Theory]
    [InlineData("text_encoder/model.onnx", "refs/text_encoder.safetensors", "input_ids", true)]
    [InlineData("unet/model.onnx", "refs/unet.safetensors", "sample,timestep,encoder_hidden_states", true)]
    [InlineData("vae_decoder/model.onnx", "refs/vae_decoder.safetensors", "latent_sample", true)]
    [InlineData("vae_encoder/model.onnx", "refs/vae_encoder.safetensors", "sample", true)]
    [InlineData("text_encoder/model.onnx", "refs/text_encoder.safetensors", "input_ids", false)]
    [InlineData("unet/model.onnx", "refs/unet.safetensors", "sample,timestep,encoder_hidden_states", false)]
    public void Bench(string model, string refsPath, string inputs, bool fuse)
    {
        var refs = SafetensorsFile.ReadAll(Fixtures.SdTiny(refsPath));
        var sw = Stopwatch.StartNew();
        using var s = GraphSession.Create(Fixtures.SdTiny(model), inputs.Split(',').ToDictionary(i => i, i => refs[i].Shape),
            new GraphSessionOptions { Fuse = fuse, Backend = ExecutionBackend.Parse("emu") });
        log.WriteLine($"prepare {sw.Elapsed.TotalSeconds:F2}"); sw.Restart();
        s.Profile = true;
        var o = s.Run(refs);
        log.WriteLine($"run {sw.Elapsed.TotalSeconds:F2}");
        foreach (var (k, v) in s.OpSeconds.OrderByDescending(kv => kv.Value).Take(8)) log.WriteLine($"  {k} {v:F2}");
        foreach (var (k, v) in o) if (refs.TryGetValue(k, out var r)) {
            var a = r.ToFloat32Array(); var b = v.ToFloat32Array();
            double m = a.Max(x => Math.Abs(x)), e = a.Zip(b).Max(p => Math.Abs(p.First - p.Second));
            log.WriteLine($"  {k}: rel err {e / m:G3}");
        }
    }
}
public class TmpEmuGradBench(ITestOutputHelper log)
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Grad(bool ck)
    {
        var refPath = Fixtures.SdTiny("refs/unet_lora_grad.safetensors");
        var refs = SafetensorsFile.ReadAll(refPath);
        var sw = Stopwatch.StartNew();
        var got = CudaDream.Engine.Training.GraphGradient.Run(new CudaDream.Engine.Training.GraphGradientRequest
        {
            Model = Fixtures.SdTiny("unet/model.onnx"), Tensors = refs, Target = "target", Lora = refPath,
            Wrt = new[] { "lora", "sample" }, Fuse = true, GradientCheckpointing = ck, Backend = ExecutionBackend.Parse("emu"),
        });
        log.WriteLine($"grad {sw.Elapsed.TotalSeconds:F2}");
        double worst = 0; string wk = "";
        foreach (var (k, v) in got) if (refs.TryGetValue(k, out var r)) {
            var a = r.ToFloat32Array(); var b = v.ToFloat32Array();
            double m = a.Max(x => Math.Abs(x)), e = a.Zip(b).Max(p => Math.Abs(p.First - p.Second)) / m;
            if (e > worst) { worst = e; wk = k; }
        }
        log.WriteLine($"worst {worst:G3} at {wk}; {got.Count} tensors");
    }
}
