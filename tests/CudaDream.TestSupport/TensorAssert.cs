using CudaDream.Engine.Tensors;
using Xunit;

namespace CudaDream.TestSupport;

public static class TensorAssert
{
    /// <summary>max|a-b| / max|ref|; the measure every reference check in DESIGN.md uses.</summary>
    public static double RelativeMaxError(ReadOnlySpan<float> actual, ReadOnlySpan<float> expected)
    {
        Assert.Equal(expected.Length, actual.Length);
        double maxRef = 0, maxDiff = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            maxRef = Math.Max(maxRef, Math.Abs(expected[i]));
            double d = Math.Abs((double)actual[i] - expected[i]);
            if (double.IsNaN(d)) return double.PositiveInfinity;
            maxDiff = Math.Max(maxDiff, d);
        }
        return maxRef == 0 ? maxDiff : maxDiff / maxRef;
    }

    public static double RelativeMaxError(Tensor actual, Tensor expected)
    {
        Assert.Equal(expected.Shape, actual.Shape);
        return RelativeMaxError(actual.ToFloat32Array(), expected.ToFloat32Array());
    }

    /// <summary>Asserts max|a-b| ≤ tol · max|ref| and equal shapes.</summary>
    public static void Close(Tensor expected, Tensor actual, double tol = 1e-4, string what = "")
    {
        Assert.True(Shapes.Equal(expected.Shape, actual.Shape), $"{what}: shape {Shapes.Format(actual.Shape)} != expected {Shapes.Format(expected.Shape)}");
        double err = RelativeMaxError(actual.ToFloat32Array(), expected.ToFloat32Array());
        Assert.True(err <= tol, $"{what}: relative max error {err:E3} > {tol:E1}");
    }

    public static void Close(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual, double tol, string what = "")
    {
        double err = RelativeMaxError(actual, expected);
        Assert.True(err <= tol, $"{what}: relative max error {err:E3} > {tol:E1}");
    }
}
