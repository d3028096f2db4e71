using CudaDream.Engine.Tensors;

namespace CudaDream.Engine.Training.Lora;

/// <summary>
/// Merges adapters into weights: W' = W + m · (alpha / rank) · (Up @ Down) (Hu et al. 2021, §4.1: "we can
/// explicitly compute and store W = W0 + BA"), for linear [out, in] and conv [out, in, k, k] weights
/// (Up and Down viewed as [out, r] and [r, in·k·k] matrices). Accumulates in float64, stores in W's type.
/// </summary>
public static class LoraMerge
{
    public static Tensor Apply(Tensor weight, LoraAdapter adapter, float multiplier) => Apply(weight, [(adapter, multiplier)]);

    /// <summary>Several adapters (e.g. several LoRA files) on one weight.</summary>
    public static Tensor Apply(Tensor weight, IReadOnlyList<(LoraAdapter Adapter, float Multiplier)> adapters)
    {
        int outDim = weight.Shape[0];
        int inDim = weight.Numel / outDim;
        var w = weight.ToFloat64Array();
        foreach (var (a, m) in adapters)
        {
            if (a.Up.Shape[0] != outDim || a.Down.Numel / a.Rank != inDim)
                throw new CudaDreamException($"LoRA for {a.ModulePath}: up {a.Up} / down {a.Down} do not fit weight {weight}");
            AddProduct(w, a.Up.ToFloat64Array(), a.Down.ToFloat64Array(), outDim, a.Rank, inDim, (double)m * a.Alpha / a.Rank);
        }
        var merged = Tensor.FromArray(w, weight.Shape);
        return merged.To(weight.DType);
    }

    /// <summary>The update ΔW = m · (alpha / rank) · Up @ Down alone, shaped like the weight, float32.</summary>
    public static Tensor Delta(LoraAdapter adapter, float multiplier, int[] weightShape)
    {
        int outDim = weightShape[0];
        int inDim = (int)(Shapes.Numel(weightShape) / outDim);
        var d = new double[(long)outDim * inDim];
        AddProduct(d, adapter.Up.ToFloat64Array(), adapter.Down.ToFloat64Array(), outDim, adapter.Rank, inDim, (double)multiplier * adapter.Alpha / adapter.Rank);
        return Tensor.FromArray(d, weightShape).To(DType.F32);
    }

    private static void AddProduct(double[] w, double[] up, double[] down, int outDim, int rank, int inDim, double scale)
    {
        for (int o = 0; o < outDim; o++)
        {
            var row = w.AsSpan(o * inDim, inDim);
            for (int r = 0; r < rank; r++)
            {
                double u = scale * up[o * rank + r];
                if (u == 0) continue;
                var drow = down.AsSpan(r * inDim, inDim);
                for (int i = 0; i < inDim; i++) row[i] += u * drow[i];
            }
        }
    }
}
