namespace CudaDream.Diffusion.Training;

/// <summary>Help text of a setting; the setting's name is its property name in snake_case (JSON) or kebab-case (flag).</summary>
[AttributeUsage(AttributeTargets.Property)]
public sealed class SettingAttribute(string help) : Attribute
{
    public string Help { get; } = help;
}

/// <summary>
/// One concept to learn. Field names follow the AUTOMATIC1111 DreamBooth extension's concepts list, so a
/// user's existing concepts JSON loads as is.
/// </summary>
public sealed record ConceptOptions
{
    [Setting("Folder of instance images (jpg, png, webp, bmp).")] public string InstanceDataDir { get; init; } = "";
    [Setting("Prompt of the instance images; [filewords] is replaced by each image's caption.")] public string InstancePrompt { get; init; } = "[filewords]";
    [Setting("The new token that names the concept, e.g. sks_pixarstyle.")] public string InstanceToken { get; init; } = "";
    [Setting("Folder of class (regularisation) images; generated there when too few.")] public string ClassDataDir { get; init; } = "";
    [Setting("Prompt of the class images ([filewords] allowed).")] public string ClassPrompt { get; init; } = "";
    [Setting("The class word, e.g. dog; the instance token is put before it in captions that lack it.")] public string ClassToken { get; init; } = "";
    [Setting("Negative prompt when generating class images.")] public string ClassNegativePrompt { get; init; } = "";
    [Setting("Class images wanted per instance image (0 = no prior preservation for this concept).")] public int NumClassImagesPer { get; init; }
    [Setting("Guidance scale when generating class images.")] public double ClassGuidanceScale { get; init; } = 7.5;
    [Setting("Sampling steps when generating class images.")] public int ClassInferSteps { get; init; } = 20;
    [Setting("Prompt of the sample images written during training (default: the instance prompt).")] public string SaveSamplePrompt { get; init; } = "";
    [Setting("More sample prompts, one grid row each after save_sample_prompt (e.g. the same scene with and without the token).")] public IReadOnlyList<string> SaveSamplePrompts { get; init; } = Array.Empty<string>();
    [Setting("Negative prompt of the sample images.")] public string SaveSampleNegativePrompt { get; init; } = "";
    [Setting("Number of sample images per sampling round for this concept.")] public int NSaveSample { get; init; } = 1;
    [Setting("Seed of the sample images (-1 = the run seed).")] public long SampleSeed { get; init; } = -1;
    [Setting("Guidance scale of the sample images.")] public double SaveGuidanceScale { get; init; } = 7.5;
    [Setting("Sampling steps of the sample images.")] public int SaveInferSteps { get; init; } = 20;
}

/// <summary>
/// Every setting of a DreamBooth run. JSON keys are snake_case; the same settings are flags in kebab-case
/// (`--learning-rate 1e-4`), and flags override the file. Validation lists every problem before work starts.
/// </summary>
public sealed record DreamBoothOptions
{
    // ---- what and where ----
    [Setting("Model: a diffusers ONNX folder (cudadream import makes one from a .safetensors checkpoint).")] public string Model { get; init; } = "";
    [Setting("Output folder: LoRA, samples, checkpoints, loss.csv, loss.png.")] public string OutputDir { get; init; } = "";
    [Setting("Name of the output LoRA file (<output_dir>/<name>.safetensors).")] public string Name { get; init; } = "lora";
    [Setting("Concepts to learn (a list of concept objects, or a path to a concepts JSON file).")] public IReadOnlyList<ConceptOptions> Concepts { get; init; } = Array.Empty<ConceptOptions>();

    // ---- data ----
    [Setting("Training resolution in pixels: N, or WxH.")] public string Resolution { get; init; } = "512";
    [Setting("Crop the centre of each image (false = random crop).")] public bool CenterCrop { get; init; } = true;
    [Setting("Flip images horizontally at random.")] public bool RandomFlip { get; init; }
    [Setting("Latents from the VAE posterior: mean (× scaling factor), or sample (mean + std·ε with ε seeded per image and crop).")] public string LatentSampling { get; init; } = "mean";
    [Setting("Aspect-ratio buckets (kohya's scheme): each image trains at the bucket of about resolution² pixels nearest its aspect ratio; a batch draws from one bucket.")] public bool EnableBucket { get; init; }
    [Setting("Smallest bucket side in pixels.")] public int MinBucketReso { get; init; } = 256;
    [Setting("Largest bucket side in pixels.")] public int MaxBucketReso { get; init; } = 1024;
    [Setting("Step of bucket sides in pixels (multiple of 8).")] public int BucketResoSteps { get; init; } = 64;
    [Setting("Buckets never enlarge an image: large images shrink to about resolution² pixels, small ones are only cropped to the step.")] public bool BucketNoUpscale { get; init; }
    [Setting("Masked loss: <image>.mask.png beside an instance image (white = learn, black = ignore), else its alpha channel; the loss is averaged over the masked latent pixels only.")] public bool MaskedLoss { get; init; }
    [Setting("Extension of caption files beside images: .txt or .caption (kohya's default).")] public string CaptionExtension { get; init; } = ".txt";
    [Setting("Shuffle the comma-separated tags of each instance prompt at every step (the first keep_tokens stay in place).")] public bool ShuffleCaption { get; init; }
    [Setting("Tags at the start of a prompt that shuffling and tag dropout leave in place (e.g. the trigger word).")] public int KeepTokens { get; init; }
    [Setting("Probability that an instance example trains with the empty prompt (for classifier-free guidance).")] public double CaptionDropoutRate { get; init; }
    [Setting("Probability that each tag after keep_tokens is dropped from an instance prompt.")] public double CaptionTagDropoutRate { get; init; }
    [Setting("Fraction of each concept's instance images held out for the validation loss (chosen by the seed; 0 = none).")] public double ValidationSplit { get; init; }
    [Setting("Folder of validation images (captions as for instance images, prompted like concept 0); instead of validation_split.")] public string ValidationDataDir { get; init; } = "";
    [Setting("Validation loss (held-out images at fixed timesteps and noise) every N steps (0 = only at the end).")] public int ValidationEveryNSteps { get; init; } = 10;

    // ---- schedule ----
    [Setting("Examples per step (instance and class examples each count).")] public int TrainBatchSize { get; init; } = 1;
    [Setting("Steps whose gradients are summed before an optimizer update.")] public int GradientAccumulationSteps { get; init; } = 1;
    [Setting("Optimizer updates to run (0 = use num_train_epochs).")] public int MaxTrainSteps { get; init; } = 400;
    [Setting("Epochs to run when max_train_steps is 0.")] public int NumTrainEpochs { get; init; }
    [Setting("Learning rate of the UNet parameters.")] public double LearningRate { get; init; } = 1e-4;
    [Setting("Learning rate of the text-encoder parameters (default: learning_rate).")] public double? TextEncoderLr { get; init; }
    [Setting("LR schedule: constant, constant_with_warmup, linear, cosine, cosine_with_restarts, polynomial.")] public string LrScheduler { get; init; } = "constant";
    [Setting("Warm-up steps of the LR schedule.")] public int LrWarmupSteps { get; init; }
    [Setting("Cycles of cosine_with_restarts.")] public double LrNumCycles { get; init; } = 1;
    [Setting("Power of the polynomial schedule.")] public double LrPower { get; init; } = 1;

    // ---- optimizer ----
    [Setting("Optimizer: adamw, adamw8bit (8-bit block-wise moments), prodigy (learning-rate-free: learning_rate is a multiplier, 1.0 usual), lion, sgd.")] public string Optimizer { get; init; } = "adamw";
    [Setting("AdamW (and adamw8bit, prodigy) β1.")] public double AdamBeta1 { get; init; } = 0.9;
    [Setting("AdamW (and adamw8bit, prodigy) β2.")] public double AdamBeta2 { get; init; } = 0.999;
    [Setting("Weight decay (decoupled for AdamW, adamw8bit, prodigy and lion; L2 for SGD).")] public double AdamWeightDecay { get; init; } = 1e-2;
    [Setting("AdamW (and adamw8bit, prodigy) ε.")] public double AdamEpsilon { get; init; } = 1e-8;
    [Setting("Lion β1 (interpolation of the update direction).")] public double LionBeta1 { get; init; } = 0.9;
    [Setting("Lion β2 (momentum decay).")] public double LionBeta2 { get; init; } = 0.99;
    [Setting("Prodigy's initial distance estimate d0.")] public double ProdigyD0 { get; init; } = 1e-6;
    [Setting("Prodigy's multiplier of the estimate (d_coef).")] public double ProdigyDCoef { get; init; } = 1.0;
    [Setting("Prodigy with Adam's bias correction in the step size.")] public bool ProdigyUseBiasCorrection { get; init; }
    [Setting("Prodigy's safeguard warm-up (the learning rate left out of the estimate's denominator).")] public bool ProdigySafeguardWarmup { get; init; }
    [Setting("Keep an exponential moving average (fp32) of the trained weights; sample grids and the written LoRA/weights use it.")] public bool UseEma { get; init; }
    [Setting("EMA decay (with diffusers' warm-up min(decay, (1 + k)/(10 + k))).")] public double EmaDecay { get; init; } = 0.999;
    [Setting("With use_ema, also write the raw (non-EMA) result as <name>-raw.safetensors.")] public bool EmaSaveRaw { get; init; }
    [Setting("SGD momentum.")] public double SgdMomentum { get; init; } = 0.9;
    [Setting("Clip the global gradient norm to this (0 = no clipping).")] public double MaxGradNorm { get; init; } = 1.0;

    // ---- numerics and memory ----
    [Setting("Mixed precision: no, fp16, bf16 (fp16/bf16 need the CUDA backend).")] public string MixedPrecision { get; init; } = "no";
    [Setting("Recompute block activations in the backward pass to save memory.")] public bool GradientCheckpointing { get; init; }
    [Setting("Backend: auto (CUDA when it loads, else CPU), cpu, cuda[:N], emu (the CUDA kernels on the CPU emulator; slow, for checking).")] public string Backend { get; init; } = "auto";
    [Setting("Engine used to generate class and sample images: auto, ort, cudadream.")] public string SampleEngine { get; init; } = "auto";

    // ---- objective ----
    [Setting("Weight of the class (prior-preservation) loss.")] public double PriorLossWeight { get; init; } = 1.0;
    [Setting("Offset noise strength (0 = off).")] public double NoiseOffset { get; init; }
    [Setting("Min-SNR-γ loss weighting (0 = off; 5 is common).")] public double MinSnrGamma { get; init; }
    [Setting("What the UNet predicts: epsilon or v_prediction (default: the model's scheduler config).")] public string? PredictionType { get; init; }
    [Setting("CLIP skip: 1 = last layer, 2 = penultimate (as AUTOMATIC1111).")] public int ClipSkip { get; init; } = 1;
    [Setting("Seed of every random draw (noise, timesteps, data order, crops, flips, LoRA init).")] public long Seed { get; init; }

    // ---- what to train ----
    [Setting("LoRA rank of linear layers.")] public int LoraRank { get; init; } = 4;
    [Setting("LoRA alpha of linear layers (scale = alpha / rank; default: the rank).")] public double? LoraAlpha { get; init; }
    [Setting("LoRA rank of convolutions (LoCon; default: lora_rank).")] public int? LoraConvRank { get; init; }
    [Setting("LoRA alpha of convolutions (default: its rank).")] public double? LoraConvAlpha { get; init; }
    [Setting("Dropout on the LoRA input.")] public double LoraDropout { get; init; }
    [Setting("LoRA targets: presets (attention, ff, proj, locon, text, kohya) or module-path globs.")] public IReadOnlyList<string> LoraTargets { get; init; } = new[] { "attention" };
    [Setting("Initialisation of LoRA down weights: kaiming (uniform, as torch) or normal.")] public string LoraInit { get; init; } = "kaiming";
    [Setting("Selected-layer fine-tuning instead of LoRA: globs over UNet weight names (e.g. *attn2.to_k.weight).")] public IReadOnlyList<string> TrainLayers { get; init; } = Array.Empty<string>();
    [Setting("Also train the text encoder (LoRA on q/k/v/out_proj and fc1/fc2).")] public bool TrainTextEncoder { get; init; }

    // ---- outputs and checkpoints ----
    [Setting("Write a sample grid every N steps (0 = only at the end).")] public int SampleEveryNSteps { get; init; }
    [Setting("Write the LoRA every N steps (0 = only at the end).")] public int SaveEveryNSteps { get; init; }
    [Setting("Write a resumable checkpoint every N steps (0 = only on interrupt and at the end).")] public int CheckpointEveryNSteps { get; init; } = 100;
    [Setting("Checkpoints to keep (older ones are deleted).")] public int CheckpointsToKeep { get; init; } = 3;
    [Setting("Evaluate the loss on a fixed set of (timestep, noise) pairs every N steps.")] public int EvalEveryNSteps { get; init; } = 10;
    [Setting("Examples in the fixed evaluation set.")] public int EvalExamples { get; init; } = 4;
    [Setting("Training logs: none, or tensorboard (event files with loss, learning rate, validation loss and sample grids).")] public string LogWith { get; init; } = "none";
    [Setting("Folder of the TensorBoard logs (default: <output_dir>/logs).")] public string LoggingDir { get; init; } = "";
    [Setting("Resume from the latest checkpoint in output_dir.")] public bool Resume { get; init; }
    [Setting("Start afresh in an output_dir that holds an earlier run: its checkpoints, samples and LoRA files are deleted (caches and class images are kept). Without it (or resume) such an output_dir is refused.")] public bool Overwrite { get; init; }
    [Setting("Width and height of sample images (default: the training resolution).")] public string? SampleResolution { get; init; }
    [Setting("Sample grids draw every prompt with the base model too, in the row above the trained one, to compare.")] public bool SampleBaseRows { get; init; }
    [Setting("Smallest side of a sample grid cell in pixels: smaller samples are enlarged (nearest neighbour, pixels kept visible).")] public int SampleCellSize { get; init; } = 128;
    [Setting("Scheduler of sample and class images: ddim, pndm, euler, euler-a, lms, heun, dpmpp-2m-karras, unipc.")] public string SampleScheduler { get; init; } = "ddim";
}
