using System.Security.Cryptography;
using System.Text;
using CudaDream.Diffusion.Images;
using CudaDream.Diffusion.Models;
using CudaDream.Diffusion.Sampling.Engines;
using CudaDream.Engine.Formats;
using CudaDream.Engine.Tensors;

namespace CudaDream.Diffusion.Training;

/// <summary>
/// Latents and text embeddings computed once and kept on disk under <c>&lt;output_dir&gt;/cache</c>, keyed by the
/// content hash of what they depend on (image bytes, crop and flip, resolution, prompt ids, the network's
/// files, CLIP skip), so later runs and resumed runs reuse them. Latents are the VAE posterior mean × the
/// latent scale, read from the encoder's moments — never the graph's own random draw.
/// </summary>
public sealed class TrainingCache : IDisposable
{
    private readonly string _dir;
    private readonly ModelFolder _model;
    private readonly GraphPipelineEngine _engine;
    private readonly Dictionary<string, Tensor> _memory = new(StringComparer.Ordinal);
    private readonly string _vaeHash, _textHash;
    private readonly int _clipSkip;
    private readonly bool _sample;
    private readonly ulong _seed;

    public int Hits { get; private set; }
    public int Misses { get; private set; }

    /// <param name="sampleLatents">Draw z = mean + std·ε (ε from the counter-based generator keyed by the seed and the
    /// latent's cache key) instead of taking the posterior mean.</param>
    public TrainingCache(string outputDir, ModelFolder model, int clipSkip, bool sampleLatents = false, ulong seed = 0)
    {
        _sample = sampleLatents;
        _seed = seed;
        _dir = Path.Combine(outputDir, "cache");
        _model = model;
        _clipSkip = clipSkip;
        var skip = clipSkip == 1 ? null : model.TextEncoderGraph.ClipSkip(clipSkip);
        var plan = new PipelinePlan(model, (component, _) => component == ModelFolder.TextEncoder && skip != null
            ? new NetworkEdits(new Dictionary<string, Tensor>(), skip) : NetworkEdits.None);
        _engine = new GraphPipelineEngine(plan, new CpuGraphBackend());
        _vaeHash = FolderHash(Path.Combine(model.Root, ModelFolder.VaeEncoder));
        _textHash = FolderHash(Path.Combine(model.Root, ModelFolder.TextEncoder));
    }

    /// <summary>The latent [C, H/8, W/8] of an image prepared at (width, height) with the given crop and flip.</summary>
    public Tensor Latent(string imagePath, int width, int height, CropPlacement crop, bool flip) =>
        Latent(imagePath, new CoverGeometry(width, height, crop, flip));

    /// <summary>The latent [C, H/8, W/8] of an image prepared by <paramref name="geometry"/> (e.g. to its aspect-ratio bucket).</summary>
    public Tensor Latent(string imagePath, ImageGeometry geometry)
    {
        int width = geometry.Width, height = geometry.Height;
        var key = Hash($"latent|{FileHash(imagePath)}|{geometry.Key}|{_vaeHash}|{_model.LatentScale}" + (_sample ? $"|sample{_seed}" : ""));
        return Cached(Path.Combine(_dir, "latents", key + ".safetensors"), () =>
        {
            var pixels = ImageTensors.ToChw(geometry.Apply(ImageLoader.Load(imagePath)));
            var moments = _engine.EncodeMoments(pixels.Reshape(1, 3, height, width)).ToFloat32Array();
            int c = _model.LatentChannels, h = height / _model.VaeScaleFactor, w = width / _model.VaeScaleFactor;
            int n = c * h * w;
            var z = new float[n];
            if (_sample)
            {
                // diffusers' DiagonalGaussianDistribution: std = exp(logvar/2), logvar clamped to [-30, 20].
                var eps = new float[n];
                CudaDream.Engine.Randomness.CounterRng.FillNormal(eps, _seed, BitConverter.ToInt32(Convert.FromHexString(key[..8])), CudaDream.Engine.Randomness.RandomPurpose.LatentSample);
                for (int i = 0; i < n; i++) z[i] = (moments[i] + MathF.Exp(0.5f * Math.Clamp(moments[n + i], -30f, 20f)) * eps[i]) * _model.LatentScale;
            }
            else
                for (int i = 0; i < n; i++) z[i] = moments[i] * _model.LatentScale;
            return Tensor.FromArray(z, c, h, w);
        });
    }

    /// <summary>
    /// The loss mask of an image on the latent grid [H/8, W/8], values in [0, 1]: the mask (red channel of the mask image,
    /// or the alpha channel) brought to the image's size, prepared by the same <paramref name="geometry"/> as the image,
    /// then averaged over each latent pixel's 8×8 block — torch's interpolate(mode="area"), as kohya resizes it.
    /// </summary>
    public Tensor Mask(string imagePath, MaskSource source, ImageGeometry geometry)
    {
        var key = Hash($"mask|{FileHash(source.Path)}|{(source.Alpha ? "alpha" : "red")}|{FileHash(imagePath)}|{geometry.Key}|{_model.VaeScaleFactor}");
        return Cached(Path.Combine(_dir, "masks", key + ".safetensors"), () =>
        {
            var image = ImageLoader.Load(imagePath);
            var mask = source.Alpha ? ImageLoader.LoadAlpha(source.Path) ?? RgbImage.Filled(image.Width, image.Height, 255, 255, 255) : ImageLoader.Load(source.Path);
            if (mask.Width != image.Width || mask.Height != image.Height) mask = Resampler.Resize(mask, image.Width, image.Height);
            var prepared = geometry.Apply(mask);
            int f = _model.VaeScaleFactor, h = geometry.Height / f, w = geometry.Width / f;
            var grid = new float[h * w];
            for (int y = 0; y < h; y++)
                for (int x = 0; x < w; x++)
                {
                    int sum = 0;
                    for (int dy = 0; dy < f; dy++)
                        for (int dx = 0; dx < f; dx++) sum += prepared.Rgb[3 * ((y * f + dy) * prepared.Width + x * f + dx)];
                    grid[y * w + x] = sum / (255f * f * f);
                }
            return Tensor.FromArray(grid, h, w);
        });
    }

    /// <summary>The text encoder's hidden states [77, D] for padded input ids (frozen text encoder only).</summary>
    /// <param name="persist">False for prompts that augmentation makes up (shuffled tags): kept in a bounded memory cache only.</param>
    public Tensor TextEmbedding(int[] inputIds, bool persist = true)
    {
        var key = Hash($"text|{string.Join(",", inputIds)}|{_textHash}|skip{_clipSkip}");
        Tensor Encode()
        {
            using var encoded = _engine.EncodeText(Tensor.FromArray(inputIds, 1, inputIds.Length));
            var t = encoded.ToTensor();
            return t.To(DType.F32).Reshape(t.Shape[1], t.Shape[2]).Clone();
        }
        var path = Path.Combine(_dir, "text", key + ".safetensors");
        if (persist || _memory.ContainsKey(path) || File.Exists(path)) return Cached(path, Encode);
        if (_volatile.TryGetValue(key, out var hit)) return hit;
        if (_volatile.Count >= 1024) _volatile.Clear();
        return _volatile[key] = Encode();
    }

    private readonly Dictionary<string, Tensor> _volatile = new(StringComparer.Ordinal);

    private Tensor Cached(string path, Func<Tensor> compute)
    {
        if (_memory.TryGetValue(path, out var t)) return t;
        if (File.Exists(path))
        {
            try
            {
                t = SafetensorsFile.ReadAll(path)["value"];
                Hits++;
                return _memory[path] = t;
            }
            catch (Engine.CudaDreamException) { /* a damaged cache entry is recomputed */ }
        }
        t = compute();
        Misses++;
        FaultInjection.At("cache-entry");
        SafetensorsWriter.Write(path, new Dictionary<string, Tensor> { ["value"] = t });
        return _memory[path] = t;
    }

    /// <summary>Frees the networks; cached values stay available.</summary>
    public void ReleaseNetworks() => _engine.Dispose();

    public void Dispose() => _engine.Dispose();

    private static string Hash(string s) => Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(s)))[..32].ToLowerInvariant();

    private static readonly Dictionary<string, string> FileHashes = new(StringComparer.Ordinal);

    /// <summary>SHA-256 of a file's bytes (memoised per path, size and time within the process).</summary>
    public static string FileHash(string path)
    {
        var info = new FileInfo(path);
        var key = $"{info.FullName}|{info.Length}|{info.LastWriteTimeUtc.Ticks}";
        lock (FileHashes)
        {
            if (FileHashes.TryGetValue(key, out var h)) return h;
            using var s = File.OpenRead(path);
            h = Convert.ToHexString(SHA256.HashData(s)).ToLowerInvariant();
            FileHashes[key] = h;
            return h;
        }
    }

    /// <summary>The hash of every file of a network folder (model.onnx and its weights), in name order.</summary>
    public static string FolderHash(string dir) =>
        Hash(string.Join("|", Directory.EnumerateFiles(dir).OrderBy(f => f, StringComparer.Ordinal).Select(f => Path.GetFileName(f) + ":" + FileHash(f))));
}
