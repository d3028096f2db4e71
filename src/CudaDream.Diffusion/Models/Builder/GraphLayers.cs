using CudaDream.Engine;
using CudaDream.Engine.Formats;
using CudaDream.Engine.Tensors;
using Onnx;

namespace CudaDream.Diffusion.Models.Builder;

/// <summary>Where a builder finds its weights: state-dict key → tensor, or null when the key is absent.</summary>
public interface IWeightSource
{
    Tensor? TryGet(string key);
}

/// <summary>Weights from a dictionary (an imported state dict).</summary>
public sealed class DictionaryWeights(IReadOnlyDictionary<string, Tensor> weights) : IWeightSource
{
    public Tensor? TryGet(string key) => weights.TryGetValue(key, out var t) ? t : null;
}

/// <summary>Options shared by the graph builders.</summary>
public sealed record GraphBuildOptions
{
    /// <summary>Element type of weights, activations, inputs and outputs: F32 or F16.</summary>
    public DType FloatType { get; init; } = DType.F32;

    /// <summary>ONNX opset; 17 gives LayerNormalization and Shape(start, end).</summary>
    public const int Opset = 17;
}

/// <summary>A built graph: the model (nodes, inputs, outputs) and its weights.</summary>
public sealed record BuiltGraph(ModelProto Model, IReadOnlyList<OnnxInitializer> Initializers)
{
    public long ParameterCount => Initializers.Sum(i => Shapes.Numel(i.Shape));

    public void Save(string path, OnnxWriteOptions? options = null) => OnnxWriter.Write(path, Model, Initializers, options);
}

/// <summary>
/// The layers every SD network is made of, emitted as the ONNX patterns the PyTorch exporter
/// produces (sd-tiny README, "Graph facts worth knowing") in their opset-17 form, so that the
/// engine's pattern recogniser fuses them. Weights are named by state-dict key (module path +
/// ".weight") and keep state-dict shapes; Linear on 3-D activations is
/// <c>MatMul(x, Transpose(W))</c> (+ <c>Add(bias)</c>). Missing and mis-shaped weights are
/// collected, and reported together by <see cref="Finish"/>.
/// </summary>
public class GraphLayers
{
    protected readonly OnnxGraphBuilder G;
    protected readonly DType F;
    private readonly IWeightSource? _weights;
    private readonly List<string> _missing = new();
    private readonly List<string> _misshaped = new();

    protected GraphLayers(string graphName, IWeightSource? weights, GraphBuildOptions options)
    {
        if (options.FloatType is not (DType.F32 or DType.F16)) throw new ArgumentException("graphs are built in F32 or F16");
        G = new OnnxGraphBuilder(graphName);
        F = options.FloatType;
        _weights = weights;
    }

    protected IDisposable Scope(string module) => G.Scope(module);

    /// <summary>The parameter <paramref name="name"/> of the current module, state-dict key = module path + "." + name.</summary>
    protected string Param(string name, params int[] shape)
    {
        string key = G.ModulePath.Length == 0 ? name : G.ModulePath + "." + name;
        Tensor? data = null;
        if (_weights != null)
        {
            var t = _weights.TryGet(key);
            if (t == null) _missing.Add(key);
            else if (!Shapes.Equal(t.Shape, shape)) _misshaped.Add($"{key} is {Shapes.Format(t.Shape)}, expected {Shapes.Format(shape)}");
            else if (!t.DType.IsFloat()) _misshaped.Add($"{key} holds {t.DType}, expected floats");
            else data = t; // converted to F tensor by tensor when written
        }
        return G.AddInitializer(key, F, shape, data);
    }

    protected BuiltGraph Finish(string what)
    {
        if (_missing.Count > 0 || _misshaped.Count > 0)
        {
            var parts = new List<string>();
            if (_missing.Count > 0) parts.Add($"{_missing.Count} missing: {string.Join(", ", _missing.Take(12))}{(_missing.Count > 12 ? ", …" : "")}");
            if (_misshaped.Count > 0) parts.Add($"{_misshaped.Count} mis-shaped: {string.Join("; ", _misshaped.Take(12))}{(_misshaped.Count > 12 ? "; …" : "")}");
            throw new CudaDreamException($"{what} weights do not fit the architecture: {string.Join("; ", parts)}");
        }
        return new BuiltGraph(G.ToModel(GraphBuildOptions.Opset), G.Initializers);
    }

    // ---- constants -------------------------------------------------------------------------

    protected string Ints(params long[] v) => G.ConstantInt64(v);
    protected string Scalar(float v) => G.ConstantScalar(v, F);
    protected string ScalarInt64(long v) => G.Constant(Tensor.FromArray(new[] { v }, Array.Empty<int>()));
    protected string FloatConst(float[] values, params int[] shape) => G.Constant(Tensor.FromArray(values, shape).To(F));

    /// <summary>Dimensions [start, end) of x's shape as an int64 vector (opset-15 Shape with start/end).</summary>
    protected string ShapeOf(string x, int start, int? end = null) =>
        end is int e
            ? G.Op("Shape", [x], new OnnxAttribute("start", (long)start), new OnnxAttribute("end", (long)e))
            : G.Op("Shape", [x], new OnnxAttribute("start", (long)start));

    // ---- layers ----------------------------------------------------------------------------

    /// <summary>torch.nn.Conv2d (square kernel), weight [out, in, k, k].</summary>
    protected string Conv(string x, string module, int inChannels, int outChannels, int kernel, int stride = 1, int? padding = null)
    {
        using var _ = Scope(module);
        int pad = padding ?? kernel / 2;
        var w = Param("weight", outChannels, inChannels, kernel, kernel);
        var b = Param("bias", outChannels);
        return G.Op("Conv", [x, w, b],
            new OnnxAttribute("dilations", new long[] { 1, 1 }), new OnnxAttribute("group", 1L),
            new OnnxAttribute("kernel_shape", new long[] { kernel, kernel }),
            new OnnxAttribute("pads", new long[] { pad, pad, pad, pad }), new OnnxAttribute("strides", new long[] { stride, stride }));
    }

    /// <summary>
    /// torch.nn.GroupNorm as the exporter writes it: Reshape(0, G, -1) → InstanceNormalization(1, 0)
    /// → Reshape(back) → Mul(γ [C,1,1]) → Add(β [C,1,1]); γ, β are reshaped from the state-dict vectors.
    /// </summary>
    protected string GroupNorm(string x, string module, int channels, int groups, float eps)
    {
        using var _ = Scope(module);
        var grouped = G.Op("Reshape", x, Ints(0, groups, -1));
        var ones = FloatConst(Enumerable.Repeat(1f, groups).ToArray(), groups);
        var zeros = FloatConst(new float[groups], groups);
        var normed = G.Op("InstanceNormalization", [grouped, ones, zeros], new OnnxAttribute("epsilon", eps));
        var back = G.Op("Reshape", normed, G.Op("Shape", x));
        var gamma = G.Op("Reshape", Param("weight", channels), Ints(channels, 1, 1));
        var beta = G.Op("Reshape", Param("bias", channels), Ints(channels, 1, 1));
        return G.Op("Add", G.Op("Mul", back, gamma), beta);
    }

    /// <summary>torch.nn.LayerNorm over the last axis (opset-17 LayerNormalization).</summary>
    protected string LayerNorm(string x, string module, int dim, float eps)
    {
        using var _ = Scope(module);
        return G.Op("LayerNormalization", [x, Param("weight", dim), Param("bias", dim)],
            new OnnxAttribute("axis", -1L), new OnnxAttribute("epsilon", eps));
    }

    /// <summary>SiLU = x·σ(x).</summary>
    protected string SiLU(string x, string module = "nonlinearity")
    {
        using var _ = Scope(module);
        return G.Op("Mul", x, G.Op("Sigmoid", x));
    }

    /// <summary>torch.nn.Linear on a 3-D activation: MatMul(x, Transpose(W)) (+ Add(bias)); W keeps its [out, in] layout.</summary>
    protected string Linear(string x, string module, int inFeatures, int outFeatures, bool bias = true)
    {
        using var _ = Scope(module);
        var wt = G.Op("Transpose", [Param("weight", outFeatures, inFeatures)], new OnnxAttribute("perm", new long[] { 1, 0 }));
        var y = G.Op("MatMul", x, wt);
        return bias ? G.Op("Add", y, Param("bias", outFeatures)) : y;
    }

    /// <summary>torch.nn.Linear on a 2-D activation: Gemm(transB = 1), as torch exports it.</summary>
    protected string Gemm(string x, string module, int inFeatures, int outFeatures)
    {
        using var _ = Scope(module);
        return G.Op("Gemm", [x, Param("weight", outFeatures, inFeatures), Param("bias", outFeatures)],
            new OnnxAttribute("alpha", 1f), new OnnxAttribute("beta", 1f), new OnnxAttribute("transB", 1L));
    }

    /// <summary>[B, N, h·d] → [B·h, N, d]: Reshape(B, N, h, d) → Transpose(0, 2, 1, 3) → Reshape(B·h, N, d).</summary>
    protected string SplitHeads(string x, string seqLen, int heads, int headDim)
    {
        var split = G.Op("Reshape", x, Ints(0, -1, heads, headDim));
        var t = G.Op("Transpose", [split], new OnnxAttribute("perm", new long[] { 0, 2, 1, 3 }));
        return G.Op("Reshape", t, G.Op("Concat", [Ints(-1), seqLen, Ints(headDim)], new OnnxAttribute("axis", 0L)));
    }

    /// <summary>[B·h, N, d] → [B, N, h·d].</summary>
    protected string MergeHeads(string x, string seqLen, int heads, int headDim)
    {
        var split = G.Op("Reshape", x, G.Op("Concat", [Ints(-1, heads), seqLen, Ints(headDim)], new OnnxAttribute("axis", 0L)));
        var t = G.Op("Transpose", [split], new OnnxAttribute("perm", new long[] { 0, 2, 1, 3 }));
        return G.Op("Reshape", t, Ints(0, 0, heads * headDim));
    }

    /// <summary>
    /// Scaled dot-product attention on split heads [B·h, N, d]: MatMul(Q, Transpose(K)) → Mul(scale) → Softmax(-1)
    /// → MatMul(V). A causal mask is added as transformers' CLIP export adds it, on the scores viewed as
    /// [B, h, N, M] (Reshape → Add → Reshape). Softmax runs in fp32 when <paramref name="upcastSoftmax"/> (diffusers' VAE).
    /// </summary>
    protected string Sdpa(string q, string k, string v, int headDim, bool scaleQueryFirst = false, bool upcastSoftmax = false,
        (string Mask, int Heads, string SeqLen)? causal = null)
    {
        var kt = G.Op("Transpose", [k], new OnnxAttribute("perm", new long[] { 0, 2, 1 }));
        var scores = G.Op("MatMul", q, kt);
        if (!scaleQueryFirst) scores = G.Op("Mul", scores, Scalar(1f / MathF.Sqrt(headDim)));
        if (causal is var (mask, heads, seqLen))
        {
            var perHead = G.Op("Reshape", scores, G.Op("Concat", [Ints(-1, heads), seqLen, seqLen], new OnnxAttribute("axis", 0L)));
            scores = G.Op("Reshape", G.Op("Add", perHead, mask), G.Op("Concat", [Ints(-1), seqLen, seqLen], new OnnxAttribute("axis", 0L)));
        }
        string probs;
        if (upcastSoftmax && F != DType.F32)
        {
            var up = G.Op("Cast", [scores], new OnnxAttribute("to", (long)DType.F32.ToOnnx()));
            var p32 = G.Op("Softmax", [up], new OnnxAttribute("axis", -1L));
            probs = G.Op("Cast", [p32], new OnnxAttribute("to", (long)F.ToOnnx()));
        }
        else probs = G.Op("Softmax", [scores], new OnnxAttribute("axis", -1L));
        return G.Op("MatMul", probs, v);
    }

    /// <summary>diffusers <c>Attention</c> (to_q/to_k/to_v without bias unless asked, to_out.0 with bias) on [B, N, C] inputs.</summary>
    protected string Attention(string x, string context, string module, int queryDim, int contextDim, int heads, bool qkvBias, bool upcastSoftmax)
    {
        using var _ = Scope(module);
        int headDim = queryDim / heads;
        var q = Linear(x, "to_q", queryDim, queryDim, qkvBias);
        var k = Linear(context, "to_k", contextDim, queryDim, qkvBias);
        var v = Linear(context, "to_v", contextDim, queryDim, qkvBias);
        var nq = ShapeOf(x, 1, 2);
        var nk = x == context ? nq : ShapeOf(context, 1, 2);
        var o = Sdpa(SplitHeads(q, nq, heads, headDim), SplitHeads(k, nk, heads, headDim), SplitHeads(v, nk, heads, headDim),
            headDim, upcastSoftmax: upcastSoftmax);
        return Linear(MergeHeads(o, nq, heads, headDim), "to_out.0", queryDim, queryDim);
    }

    /// <summary>exact GELU: x · ½(1 + erf(x/√2)), written as the exporter writes it.</summary>
    protected string Gelu(string x)
    {
        var erf = G.Op("Erf", G.Op("Div", x, Scalar(MathF.Sqrt(2f))));
        return G.Op("Mul", G.Op("Mul", x, G.Op("Add", erf, Scalar(1f))), Scalar(0.5f));
    }
}
