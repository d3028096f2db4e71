using CudaDream.Engine.Randomness;

namespace CudaDream.Diffusion.Schedulers;

/// <summary>
/// Heun's second-order method (Karras et al. 2022, Algorithm 1 / Algorithm 2 with S_churn = 0): an Euler step to
/// σ_{i+1}, then the model is evaluated there and the step is redone with the average of both slopes,
/// x_{i+1} = x_i + (σ_{i+1} − σ_i)·(d_i + d'_{i+1})/2. diffusers' HeunDiscreteScheduler expresses this as two
/// step() calls per interval, so its timesteps repeat every value but the first: t_0, t_1, t_1, …, t_{n−1},
/// t_{n−1} (2n−1 calls); the last call is a plain Euler step to σ = 0.
/// Class defaults (diffusers): β 0.00085..0.012 linear, "linspace", clip_sample false.
/// </summary>
public sealed class HeunDiscreteScheduler : SigmaScheduler
{
    private static readonly Defaults ClassDefaults = new(0.00085, 0.012, "linear", "linspace");

    private readonly bool _karras;
    private readonly bool _clipSample;
    private readonly float _clipRange;
    private readonly Dictionary<double, int> _indexCounter = new();
    private float[]? _prevDerivative;
    private float[]? _firstOrderSample;
    private float _dt;

    public override string Name => "heun";
    public override int Order => 2;

    public HeunDiscreteScheduler(SchedulerConfig config) : base(config, ClassDefaults)
    {
        _karras = config.UseKarrasSigmas ?? false;
        _clipSample = config.ClipSample ?? false;
        _clipRange = (float)(config.ClipSampleRange ?? 1.0);
    }

    protected override void SetTimestepsCore(int numInferenceSteps)
    {
        CheckSteps(numInferenceSteps, NumTrainTimesteps);
        NumInferenceSteps = numInferenceSteps;
        var (timesteps, sigmas) = InterpolatedSchedule(numInferenceSteps, _karras);
        var s = sigmas.Select(x => (float)x).Append(0f).ToArray();
        // σ: s0, s1, s1, …, s_{n−1}, s_{n−1}, 0;  t: t0, t1, t1, …, t_{n−1}, t_{n−1}.
        SigmaValues = [s[0], .. s[1..^1].SelectMany(x => new[] { x, x }), s[^1]];
        TimestepValues = [timesteps[0], .. timesteps[1..].SelectMany(x => new[] { x, x })];
        _prevDerivative = null;
        _firstOrderSample = null;
        _dt = 0;
        _indexCounter.Clear();
    }

    private bool InFirstOrderState => _prevDerivative == null;

    /// <summary>
    /// diffusers' index_for_timestep: the k-th occurrence of a repeated timestep, k = how often it was stepped;
    /// before any step, the second occurrence (so an img2img run starting mid-schedule skips no σ).
    /// </summary>
    protected override int StepIndex(double timestep)
    {
        var indices = new List<int>();
        for (int i = 0; i < TimestepValues.Length; i++) if (TimestepValues[i] == timestep) indices.Add(i);
        if (indices.Count == 0) throw new ArgumentException($"heun: timestep {timestep} is not in the schedule");
        int pos = _indexCounter.Count == 0 ? (indices.Count > 1 ? 1 : 0) : _indexCounter.GetValueOrDefault(timestep);
        if (pos >= indices.Count) throw new InvalidOperationException($"heun: timestep {timestep} stepped more often than it occurs in the schedule");
        return indices[pos];
    }

    public override void Step(ReadOnlySpan<float> modelOutput, double timestep, Span<float> sample, INoiseSource? noise = null)
    {
        RequireTimesteps();
        CheckSameLength(modelOutput.Length, sample.Length);
        int index = StepIndex(timestep);
        _indexCounter[timestep] = _indexCounter.GetValueOrDefault(timestep) + 1;

        bool first = InFirstOrderState;
        float sigma = first ? SigmaValues[index] : SigmaValues[index - 1];
        float sigmaNext = first ? SigmaValues[index + 1] : SigmaValues[index];
        float sigmaInput = first ? sigma : sigmaNext; // the σ the model was evaluated at
        var (vOut, vDen) = VFactors(sigmaInput);

        int n = sample.Length;
        var derivative = new float[n];
        for (int i = 0; i < n; i++)
        {
            float x0 = PredictOriginal(sample[i], modelOutput[i], sigmaInput, vOut, vDen);
            if (_clipSample) x0 = Math.Clamp(x0, -_clipRange, _clipRange);
            derivative[i] = (sample[i] - x0) / sigmaInput;
        }

        if (first)
        {
            // Euler predictor; remember slope, step and start point for the corrector.
            _dt = sigmaNext - sigma;
            _prevDerivative = derivative;
            _firstOrderSample = sample.ToArray();
            for (int i = 0; i < n; i++) sample[i] = sample[i] + derivative[i] * _dt;
        }
        else
        {
            // Trapezoidal corrector from the stored start point.
            var start = _firstOrderSample!;
            var prev = _prevDerivative!;
            for (int i = 0; i < n; i++)
            {
                float d = (prev[i] + derivative[i]) / 2f;
                sample[i] = start[i] + d * _dt;
            }
            _prevDerivative = null;
            _firstOrderSample = null;
        }
    }
}
