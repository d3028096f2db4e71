using CudaDream.Engine.Formats;
using CudaDream.Engine.Tensors;

namespace CudaDream.Diffusion.Models.Builder;

/// <summary>
/// transformers <c>CLIPTextModel</c> as an ONNX graph: input <c>input_ids</c> int32 [batch, sequence]
/// → <c>last_hidden_state</c> [batch, sequence, hidden], <c>pooler_output</c> [batch, hidden].
/// Pooling follows transformers: with eos_token_id == 2 (SD 1.x configs) the legacy
/// argmax(input_ids) position, otherwise the first position holding eos_token_id.
/// </summary>
public sealed class ClipTextGraph : GraphLayers
{
    private readonly ClipTextConfig _c;

    private ClipTextGraph(ClipTextConfig config, IWeightSource? weights, GraphBuildOptions options)
        : base("text_encoder", weights, options) => _c = config;

    public static BuiltGraph Build(ClipTextConfig config, IWeightSource? weights, GraphBuildOptions? options = null) =>
        new ClipTextGraph(config, weights, options ?? new GraphBuildOptions()).BuildGraph();

    private BuiltGraph BuildGraph()
    {
        G.AddInput("input_ids", DType.I32, "batch", "sequence");
        int d = _c.HiddenSize;
        string hidden, pooled;
        using (Scope("text_model"))
        {
            var seqLen = ShapeOf("input_ids", 1, 2);
            string x;
            using (Scope("embeddings"))
            {
                string tokens;
                using (Scope("token_embedding"))
                    tokens = G.Op("Gather", Param("weight", _c.VocabSize, d), "input_ids");
                string positions;
                using (Scope("position_embedding"))
                    positions = G.Op("Slice", Param("weight", _c.MaxPositions, d), Ints(0), seqLen, Ints(0));
                x = G.Op("Add", tokens, positions);
            }

            var mask = CausalMask(seqLen);
            using (Scope("encoder"))
                for (int i = 0; i < _c.NumLayers; i++)
                    x = EncoderLayer(x, $"layers.{i}", mask, seqLen);

            hidden = LayerNorm(x, "final_layer_norm", d, _c.LayerNormEps);
            pooled = Pool(hidden, seqLen);
        }
        G.AddOutput("last_hidden_state", hidden, F, "batch", "sequence", d);
        G.AddOutput("pooler_output", pooled, F, "batch", d);
        return Finish("text encoder");
    }

    /// <summary>0 on and below the diagonal, the type's lowest value above it (transformers' causal mask), cut to [N, N].</summary>
    private string CausalMask(string seqLen)
    {
        int n = _c.MaxPositions;
        float low = F == DType.F16 ? (float)Half.MinValue : float.MinValue;
        var m = new float[n * n];
        for (int i = 0; i < n; i++)
            for (int j = i + 1; j < n; j++) m[i * n + j] = low;
        var full = FloatConst(m, n, n);
        return G.Op("Slice", full, Ints(0, 0), G.Op("Concat", [seqLen, seqLen], new OnnxAttribute("axis", 0L)), Ints(0, 1));
    }

    private string EncoderLayer(string x, string module, string mask, string seqLen)
    {
        using var _ = Scope(module);
        int d = _c.HiddenSize;
        var h = LayerNorm(x, "layer_norm1", d, _c.LayerNormEps);
        x = G.Op("Add", x, SelfAttention(h, mask, seqLen));
        h = LayerNorm(x, "layer_norm2", d, _c.LayerNormEps);
        using (Scope("mlp"))
        {
            h = Linear(h, "fc1", d, _c.IntermediateSize);
            h = Activation(h);
            h = Linear(h, "fc2", _c.IntermediateSize, d);
        }
        return G.Op("Add", x, h);
    }

    /// <summary>CLIPAttention: q scaled after its projection, causal mask added to the scores.</summary>
    private string SelfAttention(string x, string mask, string seqLen)
    {
        using var _ = Scope("self_attn");
        int d = _c.HiddenSize, heads = _c.NumHeads, headDim = d / heads;
        var q = G.Op("Mul", Linear(x, "q_proj", d, d), Scalar(1f / MathF.Sqrt(headDim)));
        var k = Linear(x, "k_proj", d, d);
        var v = Linear(x, "v_proj", d, d);
        var o = Sdpa(SplitHeads(q, seqLen, heads, headDim), SplitHeads(k, seqLen, heads, headDim), SplitHeads(v, seqLen, heads, headDim),
            headDim, scaleQueryFirst: true, causal: (mask, heads, seqLen));
        return Linear(MergeHeads(o, seqLen, heads, headDim), "out_proj", d, d);
    }

    private string Activation(string x)
    {
        using var _ = Scope("activation_fn");
        if (_c.HiddenAct == "quick_gelu") return G.Op("Mul", x, G.Op("Sigmoid", G.Op("Mul", x, Scalar(1.702f))));
        return Gelu(x);
    }

    /// <summary>The hidden state at the pooled position of each row: Gather on the flattened [B·N, C] states.</summary>
    private string Pool(string hidden, string seqLen)
    {
        string position;
        if (_c.EosTokenId == 2)
            position = G.Op("ArgMax", ["input_ids"], new OnnxAttribute("axis", -1L), new OnnxAttribute("keepdims", 0L));
        else
        {
            var isEos = G.Op("Cast", [G.Op("Equal", "input_ids", G.Constant(Tensor.FromArray(new[] { _c.EosTokenId }, Array.Empty<int>())))],
                new OnnxAttribute("to", (long)DType.I32.ToOnnx()));
            position = G.Op("ArgMax", [isEos], new OnnxAttribute("axis", -1L), new OnnxAttribute("keepdims", 0L));
        }
        var batch = G.Op("Squeeze", ShapeOf("input_ids", 0, 1), Ints(0));
        var rows = G.Op("Range", ScalarInt64(0), batch, ScalarInt64(1));
        var flatIndex = G.Op("Add", position, G.Op("Mul", rows, seqLen));
        var flat = G.Op("Reshape", hidden, Ints(-1, _c.HiddenSize));
        return G.Op("Gather", [flat, flatIndex], new OnnxAttribute("axis", 0L));
    }
}
