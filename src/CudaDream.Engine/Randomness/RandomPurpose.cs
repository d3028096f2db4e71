namespace CudaDream.Engine.Randomness;

/// <summary>
/// What a random number is for. The value is the fourth counter word of <see cref="CounterRng"/>, so two
/// purposes never share a stream. The numbers are part of the file format of every run (same seed → same
/// images, exact resume): a value, once written here, never changes and is never reused.
/// </summary>
public enum RandomPurpose : uint
{
    /// <summary>Training noise ε added to latents (DDPM forward process).</summary>
    Noise = 1,
    /// <summary>Training timestep t drawn per sample.</summary>
    Timestep = 2,
    /// <summary>Dropout masks.</summary>
    Dropout = 3,
    /// <summary>LoRA down-projection initialisation.</summary>
    LoraInit = 4,
    /// <summary>Order in which the dataset is visited.</summary>
    DataOrder = 5,
    /// <summary>Random crop offsets.</summary>
    Crop = 6,
    /// <summary>Horizontal flip decisions.</summary>
    Flip = 7,
    /// <summary>Initial latents and ancestral/stochastic scheduler noise while sampling.</summary>
    SamplerNoise = 8,
    /// <summary>Initial latents of generated class (prior-preservation) images.</summary>
    ClassImageLatents = 9,
    /// <summary>Choice of the fixed evaluation set.</summary>
    EvalSet = 10,
    /// <summary>Sampling from the VAE posterior (mean + std·ε) when caching latents.</summary>
    LatentSample = 11,
    /// <summary>Caption (prompt) dropout decisions.</summary>
    CaptionDropout = 12,
    /// <summary>Order of the tags of a shuffled caption.</summary>
    CaptionShuffle = 13,
    /// <summary>Per-tag caption dropout decisions.</summary>
    CaptionTagDropout = 14,
    /// <summary>Which instance images are held out for validation.</summary>
    ValidationSplit = 15,
    /// <summary>The fixed noise of the validation loss.</summary>
    ValidationNoise = 16,
    /// <summary>Order of the examples within each aspect-ratio bucket in an epoch.</summary>
    BucketOrder = 17,
    /// <summary>Order of an epoch's batches across the buckets.</summary>
    BucketBatchOrder = 18,
    /// <summary>Seeded random weights of a model built without a checkpoint (bench --sd15); one stream per tensor.</summary>
    ArchitectureWeights = 30,
    /// <summary>Procedural pretraining scenes (pretrain-tiny): shape, colours, size and position of scene i.</summary>
    PretrainScenes = 31,
    /// <summary>Pretraining noise and order of the tiny model's autoencoder.</summary>
    PretrainAutoencoder = 32,
}
