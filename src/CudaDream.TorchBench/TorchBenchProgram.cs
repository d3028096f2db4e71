using System.Globalization;
using CudaDream.Engine;
using TorchSharp;

namespace CudaDream.TorchBench;

/// <summary>
/// cudadream-torchbench: the PyTorch side of <c>cudadream bench --compare</c>. Proves that the reference UNet
/// reproduces a PyTorch/diffusers reference, then times what CudaDream's bench times, with libtorch on the CPU.
/// </summary>
public static class TorchBenchProgram
{
    /// <summary>Runs the command line; 0 on success, 1 with one line on <paramref name="stderr"/> for bad input or a failed check.</summary>
    public static int Run(IReadOnlyList<string> args, TextWriter stdout, TextWriter stderr)
    {
        if (args is ["--help"] or ["-h"])
        {
            stdout.WriteLine(BenchOptions.Usage);
            return 0;
        }
        try
        {
            var options = BenchOptions.Parse(args);
            torch.set_num_threads(options.Threads);
            using var unet = ReferenceUNet.Load(options.Model);

            var referencePath = options.Verify ?? ReferenceCheck.FixtureReference(options.Model);
            ReferenceComparison? verified = null;
            if (referencePath != null)
            {
                verified = ReferenceCheck.VerifyForward(unet, referencePath);
                if (!verified.Passed)
                    throw new CudaDreamException(string.Format(CultureInfo.InvariantCulture,
                        "{0}: the UNet's output differs from out_sample by max|out - ref| {1:0.00E+0} = {2:0.00E+0} of max|ref| {3:G6} (allowed {4:0E+0}); not timing",
                        referencePath, verified.MaxAbsError, verified.RelativeError, verified.MaxAbsReference, verified.RelativeTolerance));
            }

            using var inputs = TorchBenchmark.RandomInputs(unet, options.Batch, options.Size);
            var results = new List<TimedResult>
            {
                TorchBenchmark.Forward(unet, inputs, options.Repeats),
                TorchBenchmark.LoraTrainStep(unet, inputs, options.Repeats),
            };
            var report = new BenchReport(LibraryName(), torch.get_num_threads(), verified, results, TorchBenchmark.PeakResidentBytes(),
                options.Model, options.Batch, options.Size, options.Repeats);
            report.WriteJson(options.Json);
            stdout.WriteLine(report.Table());
            return 0;
        }
        catch (Exception e) when (e is CudaDreamException or IOException or UnauthorizedAccessException or InvalidOperationException or ArgumentException
                                      or System.Runtime.InteropServices.ExternalException)
        {
            // One line: the caller shows it as the reason the PyTorch column is missing.
            stderr.WriteLine($"cudadream-torchbench: {e.Message.ReplaceLineEndings(" ")}");
            return 1;
        }
        catch (TypeInitializationException e) when (e.TypeName == typeof(torch).FullName)
        {
            // TorchSharp's loader explains itself over many lines; its first says what is missing.
            var why = (e.InnerException?.Message ?? e.Message).Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).FirstOrDefault();
            stderr.WriteLine($"cudadream-torchbench: libtorch could not be loaded from {AppContext.BaseDirectory} ({why}); " +
                "on Linux with a libstdc++ older than GCC 13's, build with ./build.sh bench-compare (needs patchelf)");
            return 1;
        }
    }

    /// <summary>"libtorch 2.10.0 (TorchSharp 0.107.0)", from the loaded libraries.</summary>
    public static string LibraryName()
    {
        static string ThreeParts(string version) => string.Join('.', version.Split('.').Take(3));
        var torchSharp = typeof(torch).Assembly.GetName().Version?.ToString() ?? "?";
        return $"libtorch {ThreeParts(torch.__version__)} (TorchSharp {ThreeParts(torchSharp)})";
    }
}
