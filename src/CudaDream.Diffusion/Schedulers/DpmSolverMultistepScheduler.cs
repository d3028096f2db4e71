using CudaDream.Engine.Randomness;

namespace CudaDream.Diffusion.Schedulers;

/// <summary>
/// DPM-Solver++ multistep (Lu, Zhou, Bao, Chen, Li, Zhu 2022, "DPM-Solver++: Fast Solver for Guided Sampling of
/// Diffusion Probabilistic Models", Algorithm 2) as diffusers' DPMSolverMultistepScheduler; with
/// use_karras_sigmas and solver_order 2 this is "DPM++ 2M Karras". In data-prediction form, with h = λ_t − λ_s:
/// first order x_t = (σ_t/σ_s)·x_s − α_t(e^{−h} − 1)·x̂_0 (eq. 9), second order ("midpoint") adds
/// −½·α_t(e^{−h} − 1)·D1 with D1 = (x̂_0(s0) − x̂_0(s1))/r0, r0 = h_0/h. The noise-prediction variant
/// (algorithm_type "dpmsolver", Lu et al. 2022a) and third order are included. lower_order_final drops to lower
/// order on the last steps when fewer than 15 are taken (stabilises very short schedules).
/// Class defaults (diffusers): β 0.0001..0.02 linear, order 2, dpmsolver++, midpoint, lower_order_final, "linspace".
/// </summary>
public sealed class DpmSolverMultistepScheduler : MultistepScheduler
{
    private static readonly Defaults ClassDefaults = new(0.0001, 0.02, "linear", "linspace");

    private readonly int _solverOrder;
    private readonly bool _dataPrediction;
    private readonly bool _midpoint;
    private readonly bool _lowerOrderFinal;
    private readonly double _lambdaMinClipped;
    private float[]?[] _modelOutputs;
    private int _lowerOrderNums;

    public override string Name => UseKarras && _solverOrder == 2 && _dataPrediction ? "dpmpp-2m-karras" : "dpmpp";

    public DpmSolverMultistepScheduler(SchedulerConfig config) : base(config, ClassDefaults)
    {
        _solverOrder = config.SolverOrder ?? 2;
        var algorithm = config.AlgorithmType ?? "dpmsolver++";
        if (algorithm is not ("dpmsolver++" or "dpmsolver"))
            throw Invalid("algorithm_type", $"'{algorithm}' is not supported (dpmsolver++ or dpmsolver)");
        _dataPrediction = algorithm == "dpmsolver++";
        var solverType = config.SolverType ?? "midpoint";
        if (solverType is "logrho" or "bh1" or "bh2") solverType = "midpoint"; // diffusers maps these to midpoint
        _midpoint = solverType == "midpoint";
        _lowerOrderFinal = config.LowerOrderFinal ?? true;
        _lambdaMinClipped = config.LambdaMinClipped ?? double.NegativeInfinity;
        if (config.VarianceType is "learned" or "learned_range")
            throw Invalid("variance_type", $"'{config.VarianceType}' is not supported");
        _modelOutputs = new float[_solverOrder][];
    }

    protected override void SetTimestepsCore(int numInferenceSteps)
    {
        CheckSteps(numInferenceSteps, NumTrainTimesteps);
        // Clip λ from below (needed for cosine schedules): count of λ's (ascending) below the limit.
        int clippedIdx = LambdaT.Count(l => l < _lambdaMinClipped);
        int lastTimestep = NumTrainTimesteps - clippedIdx;
        TimestepValues = MultistepTimesteps(numInferenceSteps, lastTimestep);
        NumInferenceSteps = numInferenceSteps;
        _modelOutputs = new float[_solverOrder][];
        _lowerOrderNums = 0;
    }

    public override void Step(ReadOnlySpan<float> modelOutput, double timestep, Span<float> sample, INoiseSource? noise = null)
    {
        RequireTimesteps();
        CheckSameLength(modelOutput.Length, sample.Length);
        int stepIndex = StepIndexOrLast(timestep);
        int count = TimestepValues.Length;
        int t = TrainIndex(timestep);
        int prevT = stepIndex == count - 1 ? 0 : (int)TimestepValues[stepIndex + 1];
        bool lowerOrderFinal = stepIndex == count - 1 && _lowerOrderFinal && count < 15;
        bool lowerOrderSecond = stepIndex == count - 2 && _lowerOrderFinal && count < 15;

        var converted = ConvertModelOutput(modelOutput, t, sample, _dataPrediction);
        for (int i = 0; i < _solverOrder - 1; i++) _modelOutputs[i] = _modelOutputs[i + 1];
        _modelOutputs[^1] = converted;

        if (_solverOrder == 1 || _lowerOrderNums < 1 || lowerOrderFinal)
            FirstOrder(converted, t, prevT, sample);
        else if (_solverOrder == 2 || _lowerOrderNums < 2 || lowerOrderSecond)
            SecondOrder((int)TimestepValues[stepIndex - 1], t, prevT, sample);
        else
            ThirdOrder((int)TimestepValues[stepIndex - 2], (int)TimestepValues[stepIndex - 1], t, prevT, sample);

        if (_lowerOrderNums < _solverOrder) _lowerOrderNums++;
    }

    private void FirstOrder(float[] m, int s, int t, Span<float> x)
    {
        float h = LambdaT[t] - LambdaT[s];
        if (_dataPrediction)
        {
            float c0 = SigmaT[t] / SigmaT[s], c1 = AlphaT[t] * (Exp(-h) - 1f);
            for (int i = 0; i < x.Length; i++) x[i] = c0 * x[i] - c1 * m[i];
        }
        else
        {
            float c0 = AlphaT[t] / AlphaT[s], c1 = SigmaT[t] * (Exp(h) - 1f);
            for (int i = 0; i < x.Length; i++) x[i] = c0 * x[i] - c1 * m[i];
        }
    }

    private void SecondOrder(int s1, int s0, int t, Span<float> x)
    {
        float[] m0 = _modelOutputs[^1]!, m1 = _modelOutputs[^2]!;
        float h = LambdaT[t] - LambdaT[s0], h0 = LambdaT[s0] - LambdaT[s1];
        float r0 = h0 / h;
        float d1Scale = 1f / r0;
        float c0, c1, c2;
        if (_dataPrediction)
        {
            c0 = SigmaT[t] / SigmaT[s0];
            c1 = AlphaT[t] * (Exp(-h) - 1f);
            // midpoint: −½·c1·D1; heun: +α_t((e^{−h}−1)/h + 1)·D1 (written as −(−…) below).
            c2 = _midpoint ? 0.5f * c1 : -(AlphaT[t] * ((Exp(-h) - 1f) / h + 1f));
        }
        else
        {
            c0 = AlphaT[t] / AlphaT[s0];
            c1 = SigmaT[t] * (Exp(h) - 1f);
            c2 = _midpoint ? 0.5f * c1 : SigmaT[t] * ((Exp(h) - 1f) / h - 1f);
        }
        for (int i = 0; i < x.Length; i++)
        {
            float d1 = d1Scale * (m0[i] - m1[i]);
            x[i] = c0 * x[i] - c1 * m0[i] - c2 * d1;
        }
    }

    private void ThirdOrder(int s2, int s1, int s0, int t, Span<float> x)
    {
        float[] m0 = _modelOutputs[^1]!, m1 = _modelOutputs[^2]!, m2 = _modelOutputs[^3]!;
        float h = LambdaT[t] - LambdaT[s0], h0 = LambdaT[s0] - LambdaT[s1], h1 = LambdaT[s1] - LambdaT[s2];
        float r0 = h0 / h, r1 = h1 / h;
        float inv0 = 1f / r0, inv1 = 1f / r1, w = r0 / (r0 + r1), inv01 = 1f / (r0 + r1);
        float c0, c1, c2, c3;
        if (_dataPrediction)
        {
            float e = Exp(-h) - 1f;
            c0 = SigmaT[t] / SigmaT[s0];
            c1 = AlphaT[t] * e;
            c2 = -(AlphaT[t] * (e / h + 1f));
            c3 = AlphaT[t] * ((Exp(-h) - 1f + h) / (h * h) - 0.5f);
        }
        else
        {
            float e = Exp(h) - 1f;
            c0 = AlphaT[t] / AlphaT[s0];
            c1 = SigmaT[t] * e;
            c2 = SigmaT[t] * (e / h - 1f);
            c3 = SigmaT[t] * ((Exp(h) - 1f - h) / (h * h) - 0.5f);
        }
        for (int i = 0; i < x.Length; i++)
        {
            float d10 = inv0 * (m0[i] - m1[i]), d11 = inv1 * (m1[i] - m2[i]);
            float d1 = d10 + w * (d10 - d11);
            float d2 = inv01 * (d10 - d11);
            x[i] = c0 * x[i] - c1 * m0[i] - c2 * d1 - c3 * d2;
        }
    }
}
