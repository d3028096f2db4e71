using CudaDream.Engine;
using CudaDream.Engine.Formats;
using CudaDream.Engine.Tensors;
using Tensor = TorchSharp.torch.Tensor;
using static TorchSharp.torch;
using EngineTensor = CudaDream.Engine.Tensors.Tensor;

namespace CudaDream.TorchBench;

/// <summary>The outcome of comparing an output with a reference: max |out − ref|, max |ref| and whether it is within tolerance.</summary>
public sealed record ReferenceComparison(string Reference, double MaxAbsError, double MaxAbsReference, double RelativeTolerance)
{
    public double RelativeError => MaxAbsReference > 0 ? MaxAbsError / MaxAbsReference : MaxAbsError;
    public bool Passed => double.IsFinite(MaxAbsError) && MaxAbsError <= RelativeTolerance * MaxAbsReference;
}

/// <summary>
/// Proof before timing: the UNet run on a PyTorch/diffusers reference's inputs must reproduce its output
/// (a safetensors file with <c>sample</c>, <c>timestep</c>, <c>encoder_hidden_states</c> and <c>out_sample</c>,
/// as <c>refs/unet.safetensors</c> of the sd-tiny fixture).
/// </summary>
public static class ReferenceCheck
{
    /// <summary>max|out − ref| ≤ 1e-4 · max|ref|: about 100× the spread between fp32 runs of the reference itself (fixture README).</summary>
    public const double ForwardTolerance = 1e-4;

    public static readonly string[] RequiredTensors = ["sample", "timestep", "encoder_hidden_states", "out_sample"];

    /// <summary>The fixture's reference inside a model folder (<c>refs/unet.safetensors</c>), or null.</summary>
    public static string? FixtureReference(string modelDir)
    {
        var path = Path.Combine(modelDir, "refs", "unet.safetensors");
        return File.Exists(path) ? path : null;
    }

    public static ReferenceComparison VerifyForward(ReferenceUNet unet, string referencePath)
    {
        var tensors = ReadTensors(referencePath, RequiredTensors);
        using var scope = NewDisposeScope();
        using var _ = inference_mode();
        var output = unet.Model.forward(ToTorch(tensors["sample"]), ToTorch(tensors["timestep"]), ToTorch(tensors["encoder_hidden_states"]));
        var expected = ToTorch(tensors["out_sample"]);
        if (!output.shape.SequenceEqual(expected.shape))
            throw new InvalidFileException(referencePath, $"out_sample is [{string.Join(",", expected.shape)}], the UNet gives [{string.Join(",", output.shape)}] for these inputs");
        var (error, scale) = MaxErrorAndScale(output, expected);
        return new ReferenceComparison(referencePath, error, scale, ForwardTolerance);
    }

    /// <summary>(max |a − b|, max |b|), in double precision.</summary>
    public static (double MaxAbsError, double MaxAbsReference) MaxErrorAndScale(Tensor actual, Tensor reference)
    {
        var a = actual.detach().to_type(ScalarType.Float64);
        var b = reference.detach().to_type(ScalarType.Float64);
        return ((a - b).abs().max().item<double>(), b.abs().max().item<double>());
    }

    /// <summary>Reads the named float tensors of a safetensors file; a missing one or a non-float one is an error naming the file.</summary>
    public static Dictionary<string, EngineTensor> ReadTensors(string path, IEnumerable<string> names)
    {
        using var file = SafetensorsFile.Open(path);
        var result = new Dictionary<string, EngineTensor>(StringComparer.Ordinal);
        foreach (var name in names)
        {
            if (!file.Contains(name)) throw new InvalidFileException(path, $"no tensor '{name}' (a UNet reference needs {string.Join(", ", RequiredTensors)})");
            var t = file.Load(name);
            if (!t.DType.IsFloat()) throw new InvalidFileException(path, $"tensor '{name}' holds {t.DType}, not floats");
            result[name] = t;
        }
        return result;
    }

    public static Tensor ToTorch(EngineTensor t) => tensor(t.ToFloat32Array(), t.Shape.Select(d => (long)d).ToArray());
}
