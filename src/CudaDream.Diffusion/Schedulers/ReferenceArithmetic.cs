namespace CudaDream.Diffusion.Schedulers;

/// <summary>
/// The array helpers diffusers 0.21.4 builds its schedules with, reproduced with their exact rounding:
/// numpy's float64 linspace/arange/interp/round and torch's CPU float32 linspace and cumprod. Matching these
/// bit for bit is what makes timesteps, betas and sigmas equal to the reference, not merely close.
/// </summary>
internal static class ReferenceArithmetic
{
    /// <summary>numpy.linspace(start, stop, num) in float64: start + i·((stop−start)/(num−1)), last element = stop.</summary>
    public static double[] NumpyLinspace(double start, double stop, int num)
    {
        var y = new double[num];
        if (num == 0) return y;
        int div = num - 1;
        double step = div > 0 ? (stop - start) / div : double.NaN;
        for (int i = 0; i < num; i++) y[i] = div > 0 ? i * step + start : start;
        if (num > 1) y[num - 1] = stop;
        return y;
    }

    /// <summary>
    /// numpy.arange(start, stop, step) for float64: length ⌈(stop−start)/step⌉; numpy fills start, start+step and then
    /// start + i·delta with delta = (start+step) − start.
    /// </summary>
    public static double[] NumpyArange(double start, double stop, double step)
    {
        long len = (long)Math.Ceiling((stop - start) / step);
        if (len <= 0) return [];
        if (len > 10_000_000) throw new ArgumentOutOfRangeException(nameof(step), "arange too long");
        var y = new double[len];
        double delta = (start + step) - start;
        y[0] = start;
        for (long i = 1; i < len; i++) y[i] = start + i * delta;
        return y;
    }

    /// <summary>numpy.round / ndarray.round: half to even.</summary>
    public static double Round(double x) => Math.Round(x, MidpointRounding.ToEven);

    /// <summary>
    /// numpy.interp(x, arange(len(fp)), fp) in float64: fp[j] + (fp[j+1]−fp[j])·(x−j) with j = ⌊x⌋, clamped at both ends.
    /// </summary>
    public static double InterpOnIndex(double x, ReadOnlySpan<float> fp)
    {
        int last = fp.Length - 1;
        if (double.IsNaN(x)) return double.NaN;
        if (x <= 0) return fp[0];
        if (x >= last) return fp[last];
        int j = (int)Math.Floor(x);
        if (j == x) return fp[j];
        double slope = ((double)fp[j + 1] - fp[j]) / 1.0;
        return slope * (x - j) + fp[j];
    }

    /// <summary>
    /// torch.linspace(start, end, steps, dtype=float32) on the CPU as PyTorch 1.13's AVX2 kernel computes it: start
    /// and end rounded to float32, step = (end−start)/(steps−1) in float32; the first half counts up from start, the
    /// second half down from end; the vectorised body handles pairs of 8-element chunks, each chunk being
    /// base + k·step from its first element, and the remaining elements take the scalar formula. The compiler fuses
    /// the multiply-adds (FMA), which is what makes betas equal torch's bit for bit (verified on SD 1.5's 1000 betas).
    /// </summary>
    public static float[] TorchLinspaceFloat32(double start, double end, int steps)
    {
        const int vectorWidth = 8;
        var r = new float[steps];
        if (steps == 0) return r;
        if (steps == 1) { r[0] = (float)start; return r; }
        float s = (float)start, e = (float)end;
        float step = (e - s) / (steps - 1);
        int halfway = steps / 2;
        float At(long idx) => idx < halfway ? MathF.FusedMultiplyAdd(step, idx, s) : MathF.FusedMultiplyAdd(-step, steps - idx - 1, e);
        int vectorised = steps / (2 * vectorWidth) * (2 * vectorWidth);
        for (int idx = 0; idx < vectorised; idx += vectorWidth)
        {
            float baseValue = At(idx);
            for (int k = 0; k < vectorWidth; k++) r[idx + k] = MathF.FusedMultiplyAdd(k, step, baseValue);
        }
        for (int idx = vectorised; idx < steps; idx++) r[idx] = At(idx);
        return r;
    }

    /// <summary>torch.cumprod on a float32 CPU tensor: the running product is kept in float64 and each output rounded.</summary>
    public static float[] TorchCumprodFloat32(ReadOnlySpan<float> x)
    {
        var r = new float[x.Length];
        double acc = 1.0;
        for (int i = 0; i < x.Length; i++) { acc *= x[i]; r[i] = (float)acc; }
        return r;
    }
}
