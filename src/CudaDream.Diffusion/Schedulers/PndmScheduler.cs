using CudaDream.Engine.Randomness;

namespace CudaDream.Diffusion.Schedulers;

/// <summary>
/// PNDM (Liu, Ren, Lin, Zhao 2022, "Pseudo Numerical Methods for Diffusion Models on Manifolds") as diffusers'
/// PNDMScheduler. Each step applies the transfer φ of eq. 9 with an ε estimate from a linear multistep method
/// (PLMS, eq. 12: (55e₀ − 59e₁ + 37e₂ − 9e₃)/24 and its lower-order starts). The first three estimates come
/// either from Runge–Kutta pseudo steps (PRK, eq. 13; F-PNDM) or — with skip_prk_steps, as Stable Diffusion uses —
/// from crowsonkb's PLMS warm-up, which repeats the second timestep: at the repeat it re-evaluates x_t with the
/// averaged ε (a second-order Heun-like correction) instead of advancing.
/// Class defaults (diffusers): β 0.0001..0.02 linear, skip_prk_steps false, set_alpha_to_one false, "leading".
/// </summary>
public sealed class PndmScheduler : DiffusionScheduler
{
    private static readonly Defaults ClassDefaults = new(0.0001, 0.02, "linear", "leading");
    private const int PndmOrder = 4;

    private readonly float _finalAlphaCumprod;
    private readonly bool _skipPrkSteps;

    private long[] _prkTimesteps = [];
    private readonly List<float[]> _ets = new();
    private float[]? _curModelOutput;
    private float[]? _curSample;
    private int _counter;

    public override string Name => "pndm";

    public PndmScheduler(SchedulerConfig config) : base(config, ClassDefaults)
    {
        _finalAlphaCumprod = (config.SetAlphaToOne ?? false) ? 1f : AlphasCumprod[0];
        _skipPrkSteps = config.SkipPrkSteps ?? false;
    }

    /// <summary>The Runge–Kutta warm-up timesteps (empty with skip_prk_steps).</summary>
    public IReadOnlyList<long> PrkTimesteps => _prkTimesteps;

    protected override void SetTimestepsCore(int numInferenceSteps)
    {
        CheckSteps(numInferenceSteps, NumTrainTimesteps);
        NumInferenceSteps = numInferenceSteps;
        // Ascending base grid, as PNDM's _timesteps.
        var grid = DescendingIntegerTimesteps(numInferenceSteps).Select(x => (long)x).Reverse().ToArray();
        long[] plms;
        if (_skipPrkSteps)
        {
            // concat(ts[:-1], ts[-2:-1], ts[-1:])[::-1]: the second-highest timestep appears twice.
            _prkTimesteps = [];
            var list = grid[..^1].ToList();
            if (grid.Length >= 2) list.Add(grid[^2]);
            list.Add(grid[^1]);
            list.Reverse();
            plms = list.ToArray();
        }
        else
        {
            if (grid.Length < PndmOrder)
                throw new Engine.CudaDreamException($"PNDM with Runge–Kutta warm-up needs at least {PndmOrder} steps, got {grid.Length}");
            // Last 4 grid points, each followed by its half-step point; pairs expanded to RK stages.
            long half = NumTrainTimesteps / numInferenceSteps / 2;
            var prk = new List<long>();
            foreach (var t in grid[^PndmOrder..]) { prk.Add(t); prk.Add(t + half); }
            prk.RemoveAt(prk.Count - 1);
            var doubled = prk.SelectMany(t => new[] { t, t }).ToList();
            doubled = doubled.GetRange(1, doubled.Count - 2);
            doubled.Reverse();
            _prkTimesteps = doubled.ToArray();
            plms = grid[..^3].Reverse().ToArray();
        }
        TimestepValues = _prkTimesteps.Concat(plms).Select(t => (double)t).ToArray();
        _ets.Clear();
        _counter = 0;
        _curModelOutput = null;
        _curSample = null;
    }

    public override void Step(ReadOnlySpan<float> modelOutput, double timestep, Span<float> sample, INoiseSource? noise = null)
    {
        RequireTimesteps();
        CheckSameLength(modelOutput.Length, sample.Length);
        if (_counter < _prkTimesteps.Length && !_skipPrkSteps) StepPrk(modelOutput, TrainIndex(timestep), sample);
        else StepPlms(modelOutput, TrainIndex(timestep), sample);
    }

    /// <summary>Runge–Kutta stage (eq. 13): ε' = (e₁ + 2e₂ + 2e₃ + e₄)/6 accumulated over four calls.</summary>
    private void StepPrk(ReadOnlySpan<float> modelOutput, int timestep, Span<float> sample)
    {
        int diffToPrev = _counter % 2 != 0 ? 0 : NumTrainTimesteps / NumInferenceSteps / 2;
        int prevTimestep = timestep - diffToPrev;
        int stageTimestep = (int)_prkTimesteps[_counter / 4 * 4];
        int n = sample.Length;
        _curModelOutput ??= new float[n];
        float[] eps = modelOutput.ToArray();
        switch (_counter % 4)
        {
            case 0:
                Accumulate(_curModelOutput, 1f / 6f, modelOutput);
                _ets.Add(modelOutput.ToArray());
                _curSample = sample.ToArray();
                break;
            case 1:
            case 2:
                Accumulate(_curModelOutput, 1f / 3f, modelOutput);
                break;
            default:
                for (int i = 0; i < n; i++) eps[i] = _curModelOutput[i] + (1f / 6f) * modelOutput[i];
                Array.Clear(_curModelOutput);
                break;
        }
        var current = _curSample ?? sample.ToArray();
        PreviousSample(current, stageTimestep, prevTimestep, eps, sample);
        _counter++;
    }

    private static void Accumulate(float[] acc, float weight, ReadOnlySpan<float> x)
    {
        for (int i = 0; i < acc.Length; i++) acc[i] += weight * x[i];
    }

    /// <summary>Linear multistep ε estimate (eq. 12) with the warm-up orders 1–3.</summary>
    private void StepPlms(ReadOnlySpan<float> modelOutput, int timestep, Span<float> sample)
    {
        if (!_skipPrkSteps && _ets.Count < 3)
            throw new InvalidOperationException("PNDM can only run PLMS steps after the Runge–Kutta warm-up (or with skip_prk_steps)");
        int prevTimestep = timestep - NumTrainTimesteps / NumInferenceSteps;
        if (_counter != 1)
        {
            if (_ets.Count > 3) _ets.RemoveRange(0, _ets.Count - 3);
            _ets.Add(modelOutput.ToArray());
        }
        else
        {
            // The repeated timestep: re-evaluate the step from x_t of the previous call.
            prevTimestep = timestep;
            timestep += NumTrainTimesteps / NumInferenceSteps;
        }

        int n = sample.Length;
        var eps = new float[n];
        float[] source = sample.ToArray();
        int k = _ets.Count;
        if (k == 1 && _counter == 0)
        {
            modelOutput.CopyTo(eps);
            _curSample = sample.ToArray();
        }
        else if (k == 1 && _counter == 1)
        {
            var e1 = _ets[^1];
            for (int i = 0; i < n; i++) eps[i] = (modelOutput[i] + e1[i]) / 2f;
            source = _curSample ?? throw new InvalidOperationException("PNDM warm-up state lost");
            _curSample = null;
        }
        else if (k == 2)
        {
            var (e1, e2) = (_ets[^1], _ets[^2]);
            for (int i = 0; i < n; i++) eps[i] = (3f * e1[i] - e2[i]) / 2f;
        }
        else if (k == 3)
        {
            var (e1, e2, e3) = (_ets[^1], _ets[^2], _ets[^3]);
            for (int i = 0; i < n; i++) eps[i] = (23f * e1[i] - 16f * e2[i] + 5f * e3[i]) / 12f;
        }
        else
        {
            var (e1, e2, e3, e4) = (_ets[^1], _ets[^2], _ets[^3], _ets[^4]);
            for (int i = 0; i < n; i++) eps[i] = (1f / 24f) * (55f * e1[i] - 59f * e2[i] + 37f * e3[i] - 9f * e4[i]);
        }
        PreviousSample(source, timestep, prevTimestep, eps, sample);
        _counter++;
    }

    /// <summary>
    /// The transfer part φ of eq. 9: x_{t−δ} = √(ᾱ_{t−δ}/ᾱ_t)·x_t − (ᾱ_{t−δ} − ᾱ_t)·ε / (ᾱ_t·√(1−ᾱ_{t−δ}) + √(ᾱ_t(1−ᾱ_t)ᾱ_{t−δ})).
    /// </summary>
    private void PreviousSample(ReadOnlySpan<float> x, int timestep, int prevTimestep, float[] eps, Span<float> destination)
    {
        float alphaProdT = AlphasCumprod[timestep];
        float alphaProdPrev = prevTimestep >= 0 ? AlphasCumprod[prevTimestep] : _finalAlphaCumprod;
        float betaProdT = 1f - alphaProdT;
        float betaProdPrev = 1f - alphaProdPrev;
        if (Prediction == PredictionType.VPrediction)
        {
            float sa = MathF.Sqrt(alphaProdT), sb = MathF.Sqrt(betaProdT);
            for (int i = 0; i < eps.Length; i++) eps[i] = sa * eps[i] + sb * x[i];
        }
        else if (Prediction != PredictionType.Epsilon)
            throw Invalid("prediction_type", "PNDM supports epsilon and v_prediction only");

        float sampleCoeff = MathF.Sqrt(alphaProdPrev / alphaProdT);
        float denom = alphaProdT * MathF.Sqrt(betaProdPrev) + MathF.Sqrt(alphaProdT * betaProdT * alphaProdPrev);
        float diff = alphaProdPrev - alphaProdT;
        for (int i = 0; i < eps.Length; i++)
            destination[i] = sampleCoeff * x[i] - diff * eps[i] / denom;
    }
}
