using System.Text.RegularExpressions;
using CudaDream.Diffusion.Images;
using CudaDream.Engine;
using CudaDream.Engine.Randomness;

namespace CudaDream.Diffusion.Training;

/// <summary>
/// One training image and the prompt it is learned with; its upright size (for aspect-ratio buckets) and, for masked
/// loss, where its mask comes from (null: the whole image counts).
/// </summary>
public sealed record TrainingImage(int Concept, bool IsClass, string Path, string Prompt)
{
    public int Width { get; init; }
    public int Height { get; init; }
    public MaskSource? Mask { get; init; }
}

/// <summary>A loss mask: a grey image beside the instance image (its red channel), or the image's own alpha channel.</summary>
public sealed record MaskSource(string Path, bool Alpha);

/// <summary>
/// The images of every concept with their prompts. Captions come from a <c>.txt</c> beside the image, else
/// from the file name without its extension and trailing counters ("my dog (3).jpg" → "my dog");
/// <c>[filewords]</c> in a prompt is replaced by the caption, and the instance token is put before the
/// class token (or at the start) when the result lacks it. Unreadable images are skipped with a warning.
/// Every concept is drawn equally often per epoch: a concept with fewer images is repeated.
/// </summary>
public sealed class TrainingData
{
    public const string FileWords = "[filewords]";
    public const long MaxCaptionBytes = 64 << 10;

    public IReadOnlyList<IReadOnlyList<TrainingImage>> Instances { get; }
    public IReadOnlyList<IReadOnlyList<TrainingImage>> Classes { get; }
    /// <summary>Images of the validation loss: held out of the instance images (validation_split) or from validation_data_dir.</summary>
    public IReadOnlyList<TrainingImage> Validation { get; private init; } = Array.Empty<TrainingImage>();
    /// <summary>Per concept: how many times its instance images repeat in an epoch.</summary>
    public IReadOnlyList<int> Repeats { get; }
    /// <summary>Instance examples per epoch (every concept contributes as many as the largest one has images).</summary>
    public int EpochSize { get; }
    public bool PriorPreservation => Classes.Any(c => c.Count > 0);

    private TrainingData(List<IReadOnlyList<TrainingImage>> instances, List<IReadOnlyList<TrainingImage>> classes)
    {
        Instances = instances;
        Classes = classes;
        int max = instances.Max(i => i.Count);
        Repeats = instances.Select(i => (max + i.Count - 1) / i.Count).ToList();
        EpochSize = max * instances.Count;
    }

    /// <summary>
    /// Lists and checks the instance images of every concept (class images are listed by <see cref="WithClassImages"/>),
    /// finds their masks when masked_loss is on, and sets the validation images apart.
    /// </summary>
    public static TrainingData Scan(DreamBoothOptions o, Action<string> warn)
    {
        var problems = new List<string>();
        var instances = new List<IReadOnlyList<TrainingImage>>();
        var validation = new List<TrainingImage>();
        for (int c = 0; c < o.Concepts.Count; c++)
        {
            var concept = o.Concepts[c];
            var images = ListSized(concept.InstanceDataDir, warn)
                .Select(f => new TrainingImage(c, false, f.Path, InstancePrompt(concept, Caption(f.Path, o.CaptionExtension))) { Width = f.Width, Height = f.Height })
                .Select(i => o.MaskedLoss ? i with { Mask = FindMask(i.Path) } : i).ToList();
            if (images.Count == 0) problems.Add($"concept {c}: no usable image in {concept.InstanceDataDir} (jpg, png, webp, bmp)");
            else if (o.ValidationSplit > 0)
            {
                if (images.Count < 2) warn($"warning: concept {c} has one image; none is held out for validation");
                else
                {
                    int held = Math.Clamp((int)Math.Round(images.Count * o.ValidationSplit), 1, images.Count - 1);
                    var order = CounterRng.Permutation(images.Count, (ulong)o.Seed, c, RandomPurpose.ValidationSplit);
                    var heldOut = order.Take(held).ToHashSet();
                    validation.AddRange(images.Where((_, i) => heldOut.Contains(i)));
                    images = images.Where((_, i) => !heldOut.Contains(i)).ToList();
                }
            }
            instances.Add(images);
        }
        if (o.ValidationDataDir.Length > 0)
        {
            validation.AddRange(ListSized(o.ValidationDataDir, warn).Select(f =>
                new TrainingImage(0, false, f.Path, InstancePrompt(o.Concepts[0], Caption(f.Path, o.CaptionExtension))) { Width = f.Width, Height = f.Height }));
            if (validation.Count == 0) problems.Add($"validation_data_dir: no usable image in {o.ValidationDataDir}");
        }
        if (problems.Count > 0) throw new ConfigException(problems);
        return new TrainingData(instances, instances.Select(_ => (IReadOnlyList<TrainingImage>)Array.Empty<TrainingImage>()).ToList()) { Validation = validation };
    }

    /// <summary>The mask of an instance image: &lt;name&gt;.mask.png beside it, else its alpha channel when it has one, else none.</summary>
    public static MaskSource? FindMask(string imagePath)
    {
        var maskFile = MaskPath(imagePath);
        if (File.Exists(maskFile)) return new MaskSource(maskFile, false);
        return ImageLoader.LoadAlpha(imagePath) != null ? new MaskSource(imagePath, true) : null;
    }

    public static string MaskPath(string imagePath) =>
        System.IO.Path.Combine(System.IO.Path.GetDirectoryName(imagePath)!, System.IO.Path.GetFileNameWithoutExtension(imagePath) + ".mask.png");

    /// <summary>The same data with each concept's class images (listed from its class folder).</summary>
    public TrainingData WithClassImages(IReadOnlyList<string?> classDirs, DreamBoothOptions o, Action<string> warn)
    {
        var classes = new List<IReadOnlyList<TrainingImage>>();
        for (int c = 0; c < Instances.Count; c++)
        {
            var dir = classDirs[c];
            var concept = o.Concepts[c];
            classes.Add(dir == null || concept.NumClassImagesPer == 0 ? Array.Empty<TrainingImage>()
                : ListSized(dir, warn).Take(ClassImagesWanted(c, concept))
                    .Select(f => new TrainingImage(c, true, f.Path, Fill(concept.ClassPrompt, Caption(f.Path, o.CaptionExtension))) { Width = f.Width, Height = f.Height }).ToList());
        }
        return new TrainingData(Instances.ToList(), classes) { Validation = Validation };
    }

    /// <summary>Class images a concept asks for: num_class_images_per × its instance images (the extension's meaning).</summary>
    public int ClassImagesWanted(int concept, ConceptOptions c) => c.NumClassImagesPer * Instances[concept].Count;

    /// <summary>The instance example at position <paramref name="index"/> of an epoch, before shuffling: concepts interleaved, images cycled.</summary>
    public TrainingImage InstanceAt(int index)
    {
        int concepts = Instances.Count;
        var list = Instances[index % concepts];
        return list[(index / concepts) % list.Count];
    }

    /// <summary>The class example paired with an instance example (its concept's class images, cycled; another concept's when it has none).</summary>
    public TrainingImage? ClassFor(TrainingImage instance, long position)
    {
        var own = Classes[instance.Concept];
        if (own.Count > 0) return own[(int)(position % own.Count)];
        var pool = Classes.Where(c => c.Count > 0).SelectMany(c => c).ToList();
        return pool.Count == 0 ? null : pool[(int)(position % pool.Count)];
    }

    public static List<string> ListImages(string dir, Action<string> warn) => ListSized(dir, warn).Select(f => f.Path).ToList();

    /// <summary>
    /// The usable images of a folder in name order with their upright sizes. <c>x.mask.png</c> beside an image <c>x.*</c>
    /// is that image's loss mask, never a training image.
    /// </summary>
    public static List<(string Path, int Width, int Height)> ListSized(string dir, Action<string> warn)
    {
        var files = Directory.EnumerateFiles(dir).Where(f => ImageLoader.Extensions.Contains(System.IO.Path.GetExtension(f).ToLowerInvariant()))
            .OrderBy(f => f, StringComparer.Ordinal).ToList();
        var stems = files.Select(f => System.IO.Path.GetFileNameWithoutExtension(f)).ToHashSet(StringComparer.Ordinal);
        var usable = new List<(string, int, int)>();
        foreach (var f in files)
        {
            var name = System.IO.Path.GetFileName(f);
            if (name.EndsWith(".mask.png", StringComparison.OrdinalIgnoreCase) && stems.Contains(name[..^".mask.png".Length])) continue;
            try
            {
                var image = ImageLoader.Load(f);
                usable.Add((f, image.Width, image.Height));
            }
            catch (CudaDreamException e) { warn($"warning: skipping {f}: {e.Message.Replace(f + ": ", "")}"); }
        }
        return usable;
    }

    private static readonly Regex TrailingCounter = new(@"([\s_\-.]*(\(\d+\)|\d+))+$", RegexOptions.CultureInvariant);

    /// <summary>
    /// The image's caption: a caption file beside it (<paramref name="extension"/>, else .txt, which generated class images
    /// carry), else its file name without extension and trailing counters.
    /// </summary>
    public static string Caption(string imagePath, string extension = ".txt")
    {
        var txt = System.IO.Path.ChangeExtension(imagePath, extension);
        if (!File.Exists(txt)) txt = System.IO.Path.ChangeExtension(imagePath, ".txt");
        if (File.Exists(txt))
        {
            if (new FileInfo(txt).Length > MaxCaptionBytes) throw new InvalidFileException(txt, $"caption is larger than {MaxCaptionBytes} bytes");
            return File.ReadAllText(txt).Trim();
        }
        var name = System.IO.Path.GetFileNameWithoutExtension(imagePath);
        var stripped = TrailingCounter.Replace(name, "").Trim();
        return (stripped.Length > 0 ? stripped : name).Replace('_', ' ');
    }

    public static string Fill(string prompt, string caption) => prompt.Replace(FileWords, caption, StringComparison.Ordinal).Trim();

    /// <summary>The instance prompt of an image; the instance token is inserted when the filled prompt lacks it.</summary>
    public static string InstancePrompt(ConceptOptions c, string caption)
    {
        var prompt = Fill(c.InstancePrompt, caption);
        if (c.InstanceToken.Length == 0 || ContainsWord(prompt, c.InstanceToken)) return prompt;
        if (c.ClassToken.Length > 0)
        {
            var m = Regex.Match(prompt, $@"(?<![\w]){Regex.Escape(c.ClassToken)}(?![\w])", RegexOptions.IgnoreCase | RegexOptions.CultureInvariant);
            if (m.Success) return prompt[..m.Index] + c.InstanceToken + " " + prompt[m.Index..];
        }
        return prompt.Length == 0 ? c.InstanceToken : c.InstanceToken + " " + prompt;
    }

    private static bool ContainsWord(string text, string word) =>
        Regex.IsMatch(text, $@"(?<![\w]){Regex.Escape(word)}(?![\w])", RegexOptions.IgnoreCase | RegexOptions.CultureInvariant);
}
