using CudaDream.Diffusion.Models;
using CudaDream.Diffusion.Models.Builder;
using CudaDream.Engine;
using CudaDream.Engine.Formats;
using CudaDream.Engine.Tensors;

namespace CudaDream.TorchBench;

/// <summary>
/// The UNet weights of a model folder's ONNX graph (<c>unet/model.onnx</c> + its external data), named by diffusers
/// state-dict key with the state-dict shape, whichever of the two graph sources the folder holds:
/// <list type="bullet">
/// <item>CudaDream's own graphs (<c>cudadream import</c>): every initializer is already named by key.</item>
/// <item>PyTorch exports: the exporter constant-folds some parameters into unnamed initializers (<c>onnx::MatMul_n</c> =
/// Wᵀ of an attention linear, <c>onnx::Mul_n</c> = a GroupNorm γ reshaped to [C,1,1]), so each parameter is found
/// through the node that consumes it, whose name carries the module path.</item>
/// </list>
/// The list of parameters to find comes from CudaDream's shape-only builder graph for the config (the same table
/// <c>export</c> and <c>import</c> use), so nothing here decides what an SD 1.x UNet's parameters are.
/// </summary>
public static class OnnxUNetWeights
{
    public const string UNetFolder = "unet";

    /// <summary>Reads every parameter of <paramref name="config"/>'s UNet from the folder's graph, as float32.</summary>
    public static Dictionary<string, (float[] Data, int[] Shape)> Read(string modelDir, UNetConfig config)
    {
        var onnxPath = Path.Combine(modelDir, UNetFolder, "model.onnx");
        var expected = UNetGraph.Build(config, null).Initializers.Select(i => (i.Name, i.Shape)).ToList();
        var structure = ModelFolderGraph.Load(onnxPath);
        using var model = OnnxModel.Load(onnxPath);
        var sources = Resolve(structure, expected, onnxPath);
        var result = new Dictionary<string, (float[], int[])>(StringComparer.Ordinal);
        foreach (var (name, shape) in expected)
        {
            var source = sources[name];
            var tensor = model.Initializers[source.Initializer];
            if (!tensor.DType.IsFloat()) throw new InvalidFileException(onnxPath, $"initializer '{source.Initializer}' ({name}) holds {tensor.DType}, not floats");
            var data = tensor.ToFloat32Array();
            if (source.Transposed) data = Transpose2D(data, tensor.Shape[0], tensor.Shape[1]);
            result[name] = (data, shape);
        }
        return result;
    }

    /// <summary>Where a parameter lives: the initializer and whether it holds the transpose of the [out, in] weight.</summary>
    public sealed record ParameterSource(string Initializer, bool Transposed);

    /// <summary>
    /// Finds the initializer of each expected parameter: by its own name when the graph has it with the parameter's
    /// shape, otherwise through the nodes of its module (linear weights as <see cref="ModelFolderGraph.LinearWeights"/>
    /// finds them, norm scales as the operand of the module's Mul, biases as the operand of its Add, each with the
    /// parameter's element count). Every parameter must be found exactly once; the error lists what was not.
    /// </summary>
    public static Dictionary<string, ParameterSource> Resolve(ModelFolderGraph graph, IReadOnlyList<(string Name, int[] Shape)> expected, string path)
    {
        var linear = graph.LinearWeights(Components.UNet).ToDictionary(s => s.ModulePath, StringComparer.Ordinal);
        var byModule = graph.Nodes.Where(n => n.Module.Length > 0).GroupBy(n => n.Module, StringComparer.Ordinal)
            .ToDictionary(g => g.Key, g => g.ToList(), StringComparer.Ordinal);
        var found = new Dictionary<string, ParameterSource>(StringComparer.Ordinal);
        var used = new Dictionary<string, string>(StringComparer.Ordinal);
        var problems = new List<string>();
        foreach (var (name, shape) in expected)
        {
            int dot = name.LastIndexOf('.');
            string module = name[..dot], kind = name[(dot + 1)..];
            long numel = Shapes.Numel(shape);
            ParameterSource? source = null;
            if (graph.Initializers.TryGetValue(name, out var own) && Shapes.Equal(own.Shape, shape)) source = new(name, false);
            else if (kind == "weight" && linear.TryGetValue(module, out var slot) && Shapes.Equal(slot.WeightShape, shape))
                source = new(slot.Initializer, slot.StoredTransposed && shape.Length == 2);
            else
            {
                string op = kind == "weight" ? "Mul" : "Add";
                var candidates = byModule.GetValueOrDefault(module, [])
                    .Where(n => n.Op == op)
                    .SelectMany(n => n.Inputs.Where(i => graph.IsInitializer(i) && Shapes.Numel(graph.Initializers[i].Shape) == numel))
                    .Distinct().ToList();
                if (candidates.Count == 1) source = new(candidates[0], false);
                else if (candidates.Count > 1) problems.Add($"{name}: {candidates.Count} candidate initializers ({string.Join(", ", candidates.Take(3))})");
            }
            if (source == null)
            {
                if (!problems.Any(p => p.StartsWith(name + ":", StringComparison.Ordinal))) problems.Add($"{name} {Shapes.Format(shape)}: not found");
                continue;
            }
            if (used.TryGetValue(source.Initializer, out var other)) { problems.Add($"{name} and {other} both map to '{source.Initializer}'"); continue; }
            used[source.Initializer] = name;
            found[name] = source;
        }
        if (problems.Count > 0)
            throw new InvalidFileException(path, $"{problems.Count} of {expected.Count} UNet parameters cannot be read from this graph " +
                $"(is unet/config.json the config of this UNet?): {string.Join("; ", problems.Take(5))}{(problems.Count > 5 ? "; …" : "")}");
        return found;
    }

    private static float[] Transpose2D(float[] data, int rows, int cols)
    {
        var t = new float[data.Length];
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++)
                t[c * rows + r] = data[r * cols + c];
        return t;
    }
}
