using CudaDream.Engine;

namespace CudaDream.Diffusion.Schedulers;

/// <summary>Creates schedulers by CLI name or by a config's diffusers class name.</summary>
public static class SchedulerFactory
{
    /// <summary>The names the CLI accepts.</summary>
    public static IReadOnlyList<string> Names { get; } = ["ddim", "pndm", "euler", "euler-a", "lms", "heun", "dpmpp-2m-karras", "unipc", "ddpm"];

    /// <summary>
    /// The scheduler called <paramref name="name"/>, configured from a model's scheduler config (SD 1.5's when
    /// null), as <c>Class.from_config(config)</c> would build it. "dpmpp-2m-karras" is DPMSolverMultistepScheduler
    /// with algorithm_type dpmsolver++, solver_order 2 and use_karras_sigmas true.
    /// </summary>
    public static IScheduler Create(string name, SchedulerConfig? config = null)
    {
        config ??= SchedulerConfig.StableDiffusion15;
        return name.ToLowerInvariant() switch
        {
            "ddim" => new DdimScheduler(config),
            "pndm" => new PndmScheduler(config),
            "euler" => new EulerDiscreteScheduler(config),
            "euler-a" or "euler_a" or "euler-ancestral" => new EulerAncestralDiscreteScheduler(config),
            "lms" => new LmsDiscreteScheduler(config),
            "heun" => new HeunDiscreteScheduler(config),
            "dpmpp-2m-karras" => new DpmSolverMultistepScheduler(config with { AlgorithmType = "dpmsolver++", SolverOrder = 2, UseKarrasSigmas = true }),
            "unipc" => new UniPcMultistepScheduler(config),
            "ddpm" => new DdpmScheduler(config),
            _ => throw new CudaDreamException($"unknown scheduler '{name}'; choose one of {string.Join(", ", Names)}"),
        };
    }

    /// <summary>The scheduler the config itself names (<c>_class_name</c>), e.g. PNDM for SD 1.5.</summary>
    public static IScheduler FromConfig(SchedulerConfig config) => config.ClassName switch
    {
        "DDIMScheduler" => new DdimScheduler(config),
        "PNDMScheduler" or null => new PndmScheduler(config),
        "EulerDiscreteScheduler" => new EulerDiscreteScheduler(config),
        "EulerAncestralDiscreteScheduler" => new EulerAncestralDiscreteScheduler(config),
        "LMSDiscreteScheduler" => new LmsDiscreteScheduler(config),
        "HeunDiscreteScheduler" => new HeunDiscreteScheduler(config),
        "DPMSolverMultistepScheduler" => new DpmSolverMultistepScheduler(config),
        "UniPCMultistepScheduler" => new UniPcMultistepScheduler(config),
        "DDPMScheduler" => new DdpmScheduler(config),
        var other => throw (config.SourcePath is { } p
            ? new InvalidFileException(p, $"_class_name: scheduler '{other}' is not supported")
            : new CudaDreamException($"scheduler class '{other}' is not supported")),
    };
}
