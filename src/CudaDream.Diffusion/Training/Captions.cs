using CudaDream.Engine.Randomness;

namespace CudaDream.Diffusion.Training;

/// <summary>The caption augmentations of kohya's sd-scripts (its process_caption) that a run turns on.</summary>
public sealed record CaptionOptions(bool Shuffle = false, int KeepTokens = 0, double DropoutRate = 0, double TagDropoutRate = 0)
{
    public bool Varies => Shuffle || DropoutRate > 0 || TagDropoutRate > 0;

    public static CaptionOptions From(DreamBoothOptions o) => new(o.ShuffleCaption, o.KeepTokens, o.CaptionDropoutRate, o.CaptionTagDropoutRate);
}

/// <summary>
/// Caption augmentation as kohya's sd-scripts: with probability caption_dropout_rate the whole prompt becomes the empty
/// prompt (the unconditional input classifier-free guidance needs); otherwise the prompt is split at commas into tags
/// (trimmed), the first keep_tokens stay in place, the rest are shuffled (shuffle_caption) and then each is dropped
/// with probability caption_tag_dropout_rate; the tags are joined with ", ". Every draw comes from the counter-based
/// generator keyed by (seed, example position), so a resumed run sees the same prompts.
/// </summary>
public static class Captions
{
    public static string Augment(string prompt, CaptionOptions o, ulong seed, long position)
    {
        if (!o.Varies) return prompt;
        if (o.DropoutRate > 0 && CounterRng.Uniform(seed, position, RandomPurpose.CaptionDropout, 0) < o.DropoutRate) return "";
        if (!o.Shuffle && o.TagDropoutRate <= 0) return prompt;
        var tags = prompt.Split(',').Select(t => t.Trim()).Where(t => t.Length > 0).ToList();
        int keep = Math.Min(o.KeepTokens, tags.Count);
        var fixedTags = tags.Take(keep).ToList();
        var flexible = tags.Skip(keep).ToList();
        if (o.Shuffle && flexible.Count > 1)
        {
            var order = CounterRng.Permutation(flexible.Count, seed, position, RandomPurpose.CaptionShuffle);
            flexible = order.Select(i => flexible[i]).ToList();
        }
        if (o.TagDropoutRate > 0)
            flexible = flexible.Where((_, i) => CounterRng.Uniform(seed, position, RandomPurpose.CaptionTagDropout, i) >= o.TagDropoutRate).ToList();
        return string.Join(", ", fixedTags.Concat(flexible));
    }
}
