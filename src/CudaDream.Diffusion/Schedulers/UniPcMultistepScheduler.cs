using CudaDream.Engine.Randomness;

namespace CudaDream.Diffusion.Schedulers;

/// <summary>
/// UniPC (Zhao, Bai, Rao, Zhou, Lu 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of
/// Diffusion Models") as diffusers' UniPCMultistepScheduler: each step first corrects the previous step's result
/// with the new model output (UniC, Algorithm 2) and then predicts the next sample (UniP, Algorithm 1), both in
/// data-prediction form with the B(h) variant "bh2" (B(h) = e^h − 1; "bh1": B(h) = h). With order p the
/// coefficients ρ solve R·ρ = b where R_ik = r_k^{i−1} and b_i = i!·h·φ_{i+1}(h)/B(h) (eq. 8); the order-2
/// predictor and order-1 corrector use ρ = ½ as in the paper's implementation.
/// Class defaults (diffusers): β 0.0001..0.02 linear, order 2, bh2, predict_x0, lower_order_final, "linspace".
/// </summary>
public sealed class UniPcMultistepScheduler : MultistepScheduler
{
    private static readonly Defaults ClassDefaults = new(0.0001, 0.02, "linear", "linspace");

    private readonly int _solverOrder;
    private readonly bool _predictX0;
    private readonly bool _bh2;
    private readonly bool _lowerOrderFinal;
    private readonly HashSet<int> _disableCorrector;

    private float[]?[] _modelOutputs;
    private int[] _timestepList;
    private int _lowerOrderNums;
    private int _thisOrder;
    private float[]? _lastSample;

    public override string Name => "unipc";

    public UniPcMultistepScheduler(SchedulerConfig config) : base(config, ClassDefaults)
    {
        _solverOrder = config.SolverOrder ?? 2;
        _predictX0 = config.PredictX0 ?? true;
        var solverType = config.SolverType ?? "bh2";
        if (solverType is "midpoint" or "heun" or "logrho") solverType = "bh1"; // diffusers' mapping
        _bh2 = solverType == "bh2";
        _lowerOrderFinal = config.LowerOrderFinal ?? true;
        _disableCorrector = [.. config.DisableCorrector ?? []];
        _modelOutputs = new float[_solverOrder][];
        _timestepList = new int[_solverOrder];
    }

    protected override void SetTimestepsCore(int numInferenceSteps)
    {
        CheckSteps(numInferenceSteps, NumTrainTimesteps);
        TimestepValues = MultistepTimesteps(numInferenceSteps, NumTrainTimesteps);
        NumInferenceSteps = numInferenceSteps;
        _modelOutputs = new float[_solverOrder][];
        _timestepList = new int[_solverOrder];
        _lowerOrderNums = 0;
        _lastSample = null;
    }

    public override void Step(ReadOnlySpan<float> modelOutput, double timestep, Span<float> sample, INoiseSource? noise = null)
    {
        RequireTimesteps();
        CheckSameLength(modelOutput.Length, sample.Length);
        int stepIndex = StepIndexOrLast(timestep);
        int t = TrainIndex(timestep);
        bool useCorrector = stepIndex > 0 && !_disableCorrector.Contains(stepIndex - 1) && _lastSample != null;

        var converted = ConvertModelOutput(modelOutput, t, sample, _predictX0);
        if (useCorrector) Corrector(converted, t, _lastSample!, sample, _thisOrder);

        int count = TimestepValues.Length;
        int prevT = stepIndex == count - 1 ? 0 : (int)TimestepValues[stepIndex + 1];
        for (int i = 0; i < _solverOrder - 1; i++)
        {
            _modelOutputs[i] = _modelOutputs[i + 1];
            _timestepList[i] = _timestepList[i + 1];
        }
        _modelOutputs[^1] = converted;
        _timestepList[^1] = t;

        int thisOrder = _lowerOrderFinal ? Math.Min(_solverOrder, count - stepIndex) : _solverOrder;
        _thisOrder = Math.Min(thisOrder, _lowerOrderNums + 1); // warm-up of the multistep history
        _lastSample = sample.ToArray();
        Predictor(prevT, sample, _thisOrder);

        if (_lowerOrderNums < _solverOrder) _lowerOrderNums++;
    }

    /// <summary>The step's scalars: h, r_k of the history, φ-coefficients and B(h).</summary>
    private sealed record Coefficients(float HPhi1, float Bh, float[] Rks, float[,] R, float[] B);

    private Coefficients Compute(int s0, int t, int order)
    {
        float h = LambdaT[t] - LambdaT[s0];
        var rks = new float[order];
        for (int i = 1; i < order; i++)
            rks[i - 1] = (LambdaT[_timestepList[^(i + 1)]] - LambdaT[s0]) / h;
        rks[order - 1] = 1f;

        float hh = _predictX0 ? -h : h;
        float hPhi1 = ExpM1(hh);           // h·φ_1(h) = e^h − 1
        float hPhiK = hPhi1 / hh - 1f;
        float bh = _bh2 ? ExpM1(hh) : hh;
        int factorial = 1;
        var r = new float[order, order];
        var b = new float[order];
        for (int i = 1; i <= order; i++)
        {
            for (int k = 0; k < order; k++) r[i - 1, k] = i == 1 ? 1f : i == 2 ? rks[k] : Pow(rks[k], i - 1);
            b[i - 1] = hPhiK * factorial / bh;
            factorial *= i + 1;
            hPhiK = hPhiK / hh - (float)(1.0 / factorial);
        }
        return new Coefficients(hPhi1, bh, rks, r, b);
    }

    private static float Pow(float x, int n) { float p = 1f; for (int i = 0; i < n; i++) p *= x; return p; }

    /// <summary>UniP (Algorithm 1): x_t = (σ_t/σ_s)·x − α_t·hφ_1·m_0 − α_t·B(h)·Σ ρ_k·D_k.</summary>
    private void Predictor(int t, Span<float> x, int order)
    {
        int s0 = _timestepList[^1];
        float[] m0 = _modelOutputs[^1]!;
        var c = Compute(s0, t, order);
        float[] rhos = order switch
        {
            1 => [],
            2 => [0.5f],
            _ => Solve(c.R, c.B, order - 1),
        };
        var d1s = DifferenceHistory(m0, c.Rks, order);
        Combine(x, x, m0, s0, t, c, d1s, rhos, null, 0f);
    }

    /// <summary>UniC (Algorithm 2): re-does the last step with the model output at its end point included.</summary>
    private void Corrector(float[] modelT, int t, float[] lastSample, Span<float> x, int order)
    {
        int s0 = _timestepList[^1];
        float[] m0 = _modelOutputs[^1]!;
        var c = Compute(s0, t, order);
        float[] rhos = order == 1 ? [0.5f] : Solve(c.R, c.B, order);
        var d1s = DifferenceHistory(m0, c.Rks, order);
        var d1t = new float[x.Length];
        for (int i = 0; i < d1t.Length; i++) d1t[i] = modelT[i] - m0[i];
        Combine(lastSample, x, m0, s0, t, c, d1s, rhos[..^1], d1t, rhos[^1]);
    }

    /// <summary>D_k = (m_{−k} − m_0)/r_k for the older model outputs.</summary>
    private List<float[]> DifferenceHistory(float[] m0, float[] rks, int order)
    {
        var d = new List<float[]>();
        for (int i = 1; i < order; i++)
        {
            float[] mi = _modelOutputs[^(i + 1)]!;
            float rk = rks[i - 1];
            var di = new float[m0.Length];
            for (int j = 0; j < di.Length; j++) di[j] = (mi[j] - m0[j]) / rk;
            d.Add(di);
        }
        return d;
    }

    private void Combine(ReadOnlySpan<float> source, Span<float> destination, float[] m0, int s0, int t, Coefficients c,
        List<float[]> d1s, float[] rhos, float[]? d1t, float rhoT)
    {
        float c0, c1, c2;
        if (_predictX0)
        {
            c0 = SigmaT[t] / SigmaT[s0];
            c1 = AlphaT[t] * c.HPhi1;
            c2 = AlphaT[t] * c.Bh;
        }
        else
        {
            c0 = AlphaT[t] / AlphaT[s0];
            c1 = SigmaT[t] * c.HPhi1;
            c2 = SigmaT[t] * c.Bh;
        }
        for (int i = 0; i < destination.Length; i++)
        {
            float res = 0f;
            for (int k = 0; k < d1s.Count; k++) res += rhos[k] * d1s[k][i];
            if (d1t != null) res += rhoT * d1t[i];
            float xt = c0 * source[i] - c1 * m0[i];
            destination[i] = xt - c2 * res;
        }
    }

    /// <summary>Solves the leading n×n block of R·ρ = b (Gaussian elimination with partial pivoting, in double).</summary>
    private static float[] Solve(float[,] r, float[] b, int n)
    {
        var a = new double[n, n + 1];
        for (int i = 0; i < n; i++)
        {
            for (int j = 0; j < n; j++) a[i, j] = r[i, j];
            a[i, n] = b[i];
        }
        for (int col = 0; col < n; col++)
        {
            int pivot = col;
            for (int i = col + 1; i < n; i++) if (Math.Abs(a[i, col]) > Math.Abs(a[pivot, col])) pivot = i;
            for (int j = 0; j <= n; j++) (a[col, j], a[pivot, j]) = (a[pivot, j], a[col, j]);
            for (int i = col + 1; i < n; i++)
            {
                double f = a[i, col] / a[col, col];
                for (int j = col; j <= n; j++) a[i, j] -= f * a[col, j];
            }
        }
        var x = new double[n];
        for (int i = n - 1; i >= 0; i--)
        {
            double s = a[i, n];
            for (int j = i + 1; j < n; j++) s -= a[i, j] * x[j];
            x[i] = s / a[i, i];
        }
        return x.Select(v => (float)v).ToArray();
    }
}
