using System.Numerics;
using CudaDream.Engine.Backends.Cpu.Kernels;

namespace CudaDream.Engine.Ops;

/// <summary>
/// The DreamBooth training loss: mean squared error with a weight per sample (prior preservation
/// weights the class images by λ). pred and target are [B, E] (E = elements of one sample), weights [B]
/// (empty = all 1):
///   l_b  = (1/E) · Σ_e (pred[b,e] − target[b,e])²          (per-sample loss, unweighted)
///   loss = (1/B) · Σ_b w_b · l_b
/// With all weights 1 this is torch.nn.functional.mse_loss(pred, target, reduction="mean").
/// </summary>
public static class LossReference
{
    /// <summary>The weighted loss. When <paramref name="perSample"/> is non-empty it also receives l_b (for logging).</summary>
    public static T WeightedMse<T>(int batch, int elementsPerSample, ReadOnlySpan<T> pred, ReadOnlySpan<T> target, ReadOnlySpan<T> weights,
        Span<T> perSample = default)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        Check(batch, elementsPerSample, pred.Length, target.Length, weights.Length);
        KernelChecks.Optional(perSample.Length, batch, nameof(perSample));
        T total = T.Zero;
        for (int b = 0; b < batch; b++)
        {
            T sum = T.Zero;
            for (int e = 0; e < elementsPerSample; e++)
            {
                T d = pred[b * elementsPerSample + e] - target[b * elementsPerSample + e];
                sum += d * d;
            }
            T sampleLoss = sum / T.CreateChecked(elementsPerSample);
            if (!perSample.IsEmpty) perSample[b] = sampleLoss;
            total += (weights.IsEmpty ? T.One : weights[b]) * sampleLoss;
        }
        return total / T.CreateChecked(batch);
    }

    /// <summary>The unweighted per-sample losses l_b only (what a log shows per image).</summary>
    public static void MsePerSample<T>(int batch, int elementsPerSample, ReadOnlySpan<T> pred, ReadOnlySpan<T> target, Span<T> perSample)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        KernelChecks.Exact(perSample.Length, batch, nameof(perSample));
        WeightedMse(batch, elementsPerSample, pred, target, ReadOnlySpan<T>.Empty, perSample);
    }

    /// <summary>dpred = dLoss · w_b · 2·(pred − target) / (B·E). Overwrites dpred.</summary>
    public static void WeightedMseBackward<T>(int batch, int elementsPerSample, ReadOnlySpan<T> pred, ReadOnlySpan<T> target, ReadOnlySpan<T> weights,
        T dLoss, Span<T> dpred)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        Check(batch, elementsPerSample, pred.Length, target.Length, weights.Length);
        KernelChecks.Exact(dpred.Length, pred.Length, nameof(dpred));
        T norm = T.CreateChecked(2) / (T.CreateChecked(batch) * T.CreateChecked(elementsPerSample));
        for (int b = 0; b < batch; b++)
        {
            T factor = dLoss * (weights.IsEmpty ? T.One : weights[b]) * norm;
            for (int e = 0; e < elementsPerSample; e++)
            {
                int i = b * elementsPerSample + e;
                dpred[i] = factor * (pred[i] - target[i]);
            }
        }
    }

    private static void Check(int batch, int elementsPerSample, int pred, int target, int weights)
    {
        KernelChecks.Positive(batch, nameof(batch));
        KernelChecks.Positive(elementsPerSample, nameof(elementsPerSample));
        KernelChecks.Exact(pred, (long)batch * elementsPerSample, nameof(pred));
        KernelChecks.Exact(target, (long)batch * elementsPerSample, nameof(target));
        KernelChecks.Optional(weights, batch, nameof(weights));
    }
}
