using CudaDream.Engine.Randomness;

namespace CudaDream.Diffusion.Schedulers;

/// <summary>
/// Linear multistep (k-diffusion's sample_lms; Karras et al. 2022 discuss it as a higher-order ODE solver): the
/// derivative d = (x − x̂_0)/σ of the last (up to 4) steps is extrapolated by the Lagrange polynomial through
/// their σ's and integrated over [σ_i, σ_{i+1}]: x_{i+1} = x_i + Σ_k c_k·d_{i−k},
/// c_k = ∫ Π_{j≠k} (τ − σ_{i−j})/(σ_{i−k} − σ_{i−j}) dτ. diffusers integrates with scipy's quad; the integrand
/// is a polynomial of degree ≤ 3, which 8-point Gauss–Legendre integrates exactly.
/// Class defaults (diffusers): β 0.0001..0.02 linear, "linspace", no Karras sigmas.
/// </summary>
public sealed class LmsDiscreteScheduler : SigmaScheduler
{
    private static readonly Defaults ClassDefaults = new(0.0001, 0.02, "linear", "linspace");
    public const int MaxOrder = 4;

    private readonly bool _karras;
    private readonly List<float[]> _derivatives = new();

    public override string Name => "lms";

    public LmsDiscreteScheduler(SchedulerConfig config) : base(config, ClassDefaults)
    {
        _karras = config.UseKarrasSigmas ?? false;
    }

    protected override void SetTimestepsCore(int numInferenceSteps)
    {
        CheckSteps(numInferenceSteps, NumTrainTimesteps);
        NumInferenceSteps = numInferenceSteps;
        var (timesteps, sigmas) = InterpolatedSchedule(numInferenceSteps, _karras);
        TimestepValues = timesteps;
        SigmaValues = sigmas.Select(s => (float)s).Append(0f).ToArray();
        _derivatives.Clear();
    }

    public override void Step(ReadOnlySpan<float> modelOutput, double timestep, Span<float> sample, INoiseSource? noise = null)
    {
        RequireTimesteps();
        CheckSameLength(modelOutput.Length, sample.Length);
        int index = StepIndex(timestep);
        float sigma = SigmaValues[index];
        var (vOut, vDen) = VFactors(sigma);

        var derivative = new float[sample.Length];
        for (int i = 0; i < sample.Length; i++)
        {
            float x0 = PredictOriginal(sample[i], modelOutput[i], sigma, vOut, vDen);
            derivative[i] = (sample[i] - x0) / sigma;
        }
        _derivatives.Add(derivative);
        if (_derivatives.Count > MaxOrder) _derivatives.RemoveAt(0);

        int order = Math.Min(index + 1, MaxOrder);
        var coeffs = new float[order];
        for (int k = 0; k < order; k++) coeffs[k] = (float)LmsCoefficient(order, index, k);

        // Σ_k c_k·d_{i−k}: the newest derivative pairs with k = 0.
        for (int i = 0; i < sample.Length; i++)
        {
            float sum = 0f;
            for (int k = 0; k < order; k++) sum += coeffs[k] * _derivatives[_derivatives.Count - 1 - k][i];
            sample[i] += sum;
        }
    }

    private double LmsCoefficient(int order, int t, int currentOrder)
    {
        double Basis(double tau)
        {
            double prod = 1.0;
            for (int k = 0; k < order; k++)
            {
                if (k == currentOrder) continue;
                prod *= (tau - SigmaValues[t - k]) / ((double)SigmaValues[t - currentOrder] - SigmaValues[t - k]);
            }
            return prod;
        }
        return GaussLegendre8(Basis, SigmaValues[t], SigmaValues[t + 1]);
    }

    private static readonly double[] GlNodes =
    [
        -0.9602898564975363, -0.7966664774136267, -0.5255324099163290, -0.1834346424956498,
        0.1834346424956498, 0.5255324099163290, 0.7966664774136267, 0.9602898564975363,
    ];
    private static readonly double[] GlWeights =
    [
        0.1012285362903763, 0.2223810344533745, 0.3137066458778873, 0.3626837833783620,
        0.3626837833783620, 0.3137066458778873, 0.2223810344533745, 0.1012285362903763,
    ];

    /// <summary>∫_a^b f, exact for polynomials of degree ≤ 15.</summary>
    private static double GaussLegendre8(Func<double, double> f, double a, double b)
    {
        double half = (b - a) / 2, mid = (a + b) / 2, sum = 0;
        for (int i = 0; i < GlNodes.Length; i++) sum += GlWeights[i] * f(mid + half * GlNodes[i]);
        return sum * half;
    }
}
