using System.Text.Json;
using CudaDream.Engine.Backends.Cpu.Kernels;
using CudaDream.Engine.Formats;
using CudaDream.Engine.Ops;
using CudaDream.TestSupport;

namespace CudaDream.Engine.Tests.Cpu;

/// <summary>
/// The sd-tiny fixture's weights by diffusers/transformers module path ("unet:conv_in.weight"), read from
/// checkpoint.safetensors (original-SD key names) through the key map in refs/checkpoint_keys.json.
/// </summary>
internal sealed class SdTinyWeights
{
    private static readonly Lazy<SdTinyWeights> Shared = new(() => new SdTinyWeights());
    public static SdTinyWeights Instance => Shared.Value;

    private readonly Dictionary<string, float[]> _tensors = new();

    private SdTinyWeights()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Fixtures.SdTiny("refs/checkpoint_keys.json")));
        using var file = SafetensorsFile.Open(Fixtures.SdTiny("checkpoint.safetensors"));
        foreach (var entry in doc.RootElement.GetProperty("key_map").EnumerateObject())
            _tensors[entry.Value.GetString()!] = file.Get(entry.Name).ToFloat32Array();
    }

    public float[] this[string modulePath] => _tensors.TryGetValue(modulePath, out var t)
        ? t : throw new KeyNotFoundException($"no weight {modulePath} in the sd-tiny checkpoint key map");

    public static Dictionary<string, float[]> Read(string refsFile)
    {
        using var file = SafetensorsFile.Open(Fixtures.SdTiny("refs/" + refsFile));
        return file.Names.ToDictionary(n => n, n => file.Get(n).ToFloat32Array());
    }
}

/// <summary>
/// diffusers/transformers modules re-assembled from the CPU kernels, fast or reference — just enough to
/// recompute the recorded activations of the fixture. Layouts: images NCHW, token sequences [B, T, C].
/// </summary>
internal sealed class SdTinyModules(bool fast)
{
    private readonly SdTinyWeights _w = SdTinyWeights.Instance;

    /// <summary>torch.nn.Linear: y [rows, out] = x·Wᵀ + b.</summary>
    public float[] Linear(string module, float[] x, int rows, bool bias = true)
    {
        var weight = _w[module + ".weight"];
        int outFeatures = bias ? _w[module + ".bias"].Length : weight.Length / (x.Length / rows);
        int inFeatures = weight.Length / outFeatures;
        var y = new float[rows * outFeatures];
        if (fast) GemmFast.Gemm(false, true, rows, outFeatures, inFeatures, 1f, x, inFeatures, weight, inFeatures, 0f, y, outFeatures);
        else GemmReference.Gemm(false, true, rows, outFeatures, inFeatures, 1f, x, inFeatures, weight, inFeatures, 0f, y, outFeatures);
        if (bias)
        {
            var b = _w[module + ".bias"];
            for (int r = 0; r < rows; r++)
                for (int o = 0; o < outFeatures; o++) y[r * outFeatures + o] += b[o];
        }
        return y;
    }

    /// <summary>A 1×1 (pad 0) or 3×3 (pad 1, stride 1) convolution with bias, as in every SD block but the downsamplers.</summary>
    public float[] Conv(string module, float[] x, int n, int h, int w)
    {
        var weight = _w[module + ".weight"];
        var bias = _w[module + ".bias"];
        int cout = bias.Length, cin = x.Length / (n * h * w);
        int k = (int)Math.Round(Math.Sqrt(weight.Length / (cout * cin)));
        int pad = k / 2;
        var g = new Conv2dGeometry(n, cin, h, w, cout, k, k, PadTop: pad, PadLeft: pad, PadBottom: pad, PadRight: pad);
        var y = new float[g.OutputLength];
        if (fast) ConvFast.Conv2dForward(g, x, weight, bias, y); else ConvReference.Conv2dForward(g, x, weight, bias, y);
        return y;
    }

    public float[] GroupNorm(string module, float[] x, int n, int c, int groups, float eps, bool silu)
    {
        int s = x.Length / (n * c);
        var y = new float[x.Length];
        var mean = new float[n * groups];
        var rstd = new float[n * groups];
        if (fast) GroupNormFast.Forward(n, c, s, groups, eps, x, _w[module + ".weight"], _w[module + ".bias"], y, mean, rstd, silu);
        else GroupNormReference.Forward(n, c, s, groups, eps, x, _w[module + ".weight"], _w[module + ".bias"], y, mean, rstd, silu);
        return y;
    }

    public float[] LayerNorm(string module, float[] x, int dim, float eps = 1e-5f)
    {
        int rows = x.Length / dim;
        var y = new float[x.Length];
        if (fast) LayerNormFast.Forward(rows, dim, eps, x, _w[module + ".weight"], _w[module + ".bias"], y, new float[rows], new float[rows]);
        else LayerNormReference.Forward(rows, dim, eps, x, _w[module + ".weight"], _w[module + ".bias"], y, new float[rows], new float[rows]);
        return y;
    }

    public float[] Attention(float[] q, float[] k, float[] v, int batch, int queries, int keys, int heads, bool causal = false)
    {
        int d = q.Length / (batch * queries * heads);
        var shape = AttentionShape.Create(batch, queries, keys, heads, d, causal);
        var o = new float[shape.OutputLengthTotal];
        var lse = new float[shape.LseLength];
        if (fast) AttentionFast.Forward(shape, q, k, v, o, lse); else AttentionReference.Forward(shape, q, k, v, o, lse);
        return o;
    }

    /// <summary>diffusers Attention with AttnProcessor on [B, T, C] tokens: to_q/k/v (bias as given), heads, to_out.0 (+bias).</summary>
    public float[] DiffusersAttention(string module, float[] x, int batch, int tokens, int heads, float[]? context = null, int contextTokens = 0, bool qkvBias = false)
    {
        context ??= x;
        if (contextTokens == 0) contextTokens = tokens;
        var q = Linear(module + ".to_q", x, batch * tokens, qkvBias);
        var k = Linear(module + ".to_k", context, batch * contextTokens, qkvBias);
        var v = Linear(module + ".to_v", context, batch * contextTokens, qkvBias);
        var o = Attention(q, k, v, batch, tokens, contextTokens, heads);
        return Linear(module + ".to_out.0", o, batch * tokens);
    }

    public float[] Silu(float[] x)
    {
        var y = new float[x.Length];
        ActivationReference.Silu<float>(x, y);
        return y;
    }

    public float[] Geglu(float[] x, int rows)
    {
        int f = x.Length / rows / 2;
        var y = new float[rows * f];
        ActivationReference.Geglu<float>(rows, f, x, y);
        return y;
    }

    public float[] QuickGelu(float[] x)
    {
        var y = new float[x.Length];
        ActivationReference.QuickGelu<float>(x, y);
        return y;
    }

    public static float[] Add(float[] a, float[] b) => a.Zip(b, (p, q) => p + q).ToArray();

    /// <summary>[N, C, H·W] ↔ [N, H·W, C] (diffusers' permute(0,2,3,1).reshape and back).</summary>
    public static float[] ChannelsLast(float[] x, int n, int c, int s)
    {
        var y = new float[x.Length];
        for (int b = 0; b < n; b++)
            for (int ch = 0; ch < c; ch++)
                for (int i = 0; i < s; i++) y[(b * s + i) * c + ch] = x[(b * c + ch) * s + i];
        return y;
    }

    public static float[] ChannelsFirst(float[] x, int n, int c, int s)
    {
        var y = new float[x.Length];
        for (int b = 0; b < n; b++)
            for (int ch = 0; ch < c; ch++)
                for (int i = 0; i < s; i++) y[(b * c + ch) * s + i] = x[(b * s + i) * c + ch];
        return y;
    }
}
