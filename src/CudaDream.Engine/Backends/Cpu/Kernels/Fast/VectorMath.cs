using System.Numerics;
using System.Numerics.Tensors;

namespace CudaDream.Engine.Backends.Cpu.Kernels;

/// <summary>Span reductions and fused loops the normalisation kernels share, vectorised with <see cref="Vector{T}"/>.</summary>
internal static class VectorMath
{
    /// <summary>Σ (x − mean)², two-pass variance's second pass.</summary>
    public static float SumSquaredDeviations(ReadOnlySpan<float> x, float mean)
    {
        var acc = Vector<float>.Zero;
        var m = new Vector<float>(mean);
        int i = 0, w = Vector<float>.Count;
        ref float start = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(x);
        for (; i <= x.Length - w; i += w)
        {
            var d = Vector.LoadUnsafe(ref start, (nuint)i) - m;
            acc += d * d;
        }
        float sum = Vector.Sum(acc);
        for (; i < x.Length; i++) sum += (x[i] - mean) * (x[i] - mean);
        return sum;
    }

    /// <summary>Σ dz·(x − mean).</summary>
    public static float DotCentered(ReadOnlySpan<float> dz, ReadOnlySpan<float> x, float mean)
    {
        var acc = Vector<float>.Zero;
        var m = new Vector<float>(mean);
        int i = 0, w = Vector<float>.Count;
        ref float d0 = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(dz);
        ref float x0 = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(x);
        for (; i <= x.Length - w; i += w)
            acc += Vector.LoadUnsafe(ref d0, (nuint)i) * (Vector.LoadUnsafe(ref x0, (nuint)i) - m);
        float sum = Vector.Sum(acc);
        for (; i < x.Length; i++) sum += dz[i] * (x[i] - mean);
        return sum;
    }

    /// <summary>y = x·scale + shift.</summary>
    public static void Affine(ReadOnlySpan<float> x, float scale, float shift, Span<float> y)
    {
        int i = 0, w = Vector<float>.Count;
        ref float x0 = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(x);
        ref float y0 = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(y);
        var vs = new Vector<float>(scale);
        var vb = new Vector<float>(shift);
        for (; i <= x.Length - w; i += w) (Vector.LoadUnsafe(ref x0, (nuint)i) * vs + vb).StoreUnsafe(ref y0, (nuint)i);
        for (; i < x.Length; i++) y[i] = x[i] * scale + shift;
    }

    /// <summary>y = y·σ(y) in place; scratch receives σ(y).</summary>
    public static void SiluInPlace(Span<float> y, Span<float> scratch)
    {
        TensorPrimitives.Sigmoid(y, scratch);
        TensorPrimitives.Multiply(y, scratch, y);
    }

    /// <summary>dz = dy·σ(z)·(1 + z·(1 − σ(z))): the SiLU backward, z being the pre-activation. scratch receives σ(z).</summary>
    public static void SiluBackward(ReadOnlySpan<float> z, ReadOnlySpan<float> dy, Span<float> dz, Span<float> scratch)
    {
        TensorPrimitives.Sigmoid(z, scratch);
        int i = 0, w = Vector<float>.Count;
        ref float z0 = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(z);
        ref float dy0 = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(dy);
        ref float s0 = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(scratch);
        ref float dz0 = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(dz);
        var one = Vector<float>.One;
        for (; i <= z.Length - w; i += w)
        {
            var s = Vector.LoadUnsafe(ref s0, (nuint)i);
            var zi = Vector.LoadUnsafe(ref z0, (nuint)i);
            (Vector.LoadUnsafe(ref dy0, (nuint)i) * s * (one + zi * (one - s))).StoreUnsafe(ref dz0, (nuint)i);
        }
        for (; i < z.Length; i++) dz[i] = dy[i] * scratch[i] * (1f + z[i] * (1f - scratch[i]));
    }

    /// <summary>dx = rstd·(γ·dz − a − (x − mean)·rstd·b): the normalisation backward's last pass.</summary>
    public static void NormInputGradient(ReadOnlySpan<float> x, ReadOnlySpan<float> dz, float gamma, float mean, float rstd,
        float meanDxhat, float meanDxhatXhat, Span<float> dx)
    {
        int i = 0, w = Vector<float>.Count;
        ref float x0 = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(x);
        ref float dz0 = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(dz);
        ref float dx0 = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(dx);
        var vg = new Vector<float>(gamma);
        var vm = new Vector<float>(mean);
        var vr = new Vector<float>(rstd);
        var va = new Vector<float>(meanDxhat);
        var vb = new Vector<float>(meanDxhatXhat);
        for (; i <= x.Length - w; i += w)
        {
            var xhat = (Vector.LoadUnsafe(ref x0, (nuint)i) - vm) * vr;
            (vr * (Vector.LoadUnsafe(ref dz0, (nuint)i) * vg - va - xhat * vb)).StoreUnsafe(ref dx0, (nuint)i);
        }
        for (; i < x.Length; i++)
            dx[i] = rstd * (dz[i] * gamma - meanDxhat - (x[i] - mean) * rstd * meanDxhatXhat);
    }

    /// <summary>Splits [0, count) into at most `parts` contiguous ranges and runs body on each, in parallel when parts &gt; 1.</summary>
    public static void ForRanges(int count, int parts, Action<int, int> body)
    {
        parts = Math.Clamp(parts, 1, Math.Max(1, count));
        if (parts == 1) { body(0, count); return; }
        int per = (count + parts - 1) / parts;
        Parallel.For(0, parts, CpuKernelOptions.ParallelOptions(CpuKernelOptions.MaxDegreeOfParallelism), p =>
        {
            int start = p * per, end = Math.Min(count, start + per);
            if (start < end) body(start, end);
        });
    }
}
