using System.Numerics;
using CudaDream.Engine.Tensors;
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;

namespace CudaDream.Engine.Backends.Cpu;

/// <summary>
/// NumPy-style broadcasting over up to three operands: the output shape is walked row by row
/// (the last, coalesced dimension), each operand read through strides that are 0 on broadcast axes.
/// </summary>
internal readonly struct BroadcastPlan
{
    public readonly int[] Outer;       // sizes of the outer (row) dimensions
    public readonly long[][] OuterStrides; // per operand, strides of the outer dimensions
    public readonly int Inner;         // length of the innermost (coalesced) dimension
    public readonly long[] InnerStride; // per operand, stride of the innermost dimension (0 or 1 or more)
    public readonly long Rows;

    public BroadcastPlan(int[] outShape, params int[][] operandShapes)
    {
        int r = outShape.Length;
        int k = operandShapes.Length;
        var strides = new long[k][];
        for (int o = 0; o < k; o++)
        {
            var s = operandShapes[o];
            var full = new long[r];
            long acc = 1;
            for (int i = r - 1; i >= 0; i--)
            {
                int src = i - (r - s.Length);
                int d = src >= 0 ? s[src] : 1;
                full[i] = d == 1 && outShape[i] != 1 ? 0 : acc;
                acc *= d;
            }
            strides[o] = full;
        }
        // Coalesce adjacent dimensions when every operand steps through them contiguously.
        var dims = new List<int>();
        var st = Enumerable.Range(0, k).Select(_ => new List<long>()).ToArray();
        for (int i = 0; i < r; i++)
        {
            if (outShape[i] == 1) continue;
            if (dims.Count > 0)
            {
                int last = dims.Count - 1;
                bool merge = true;
                for (int o = 0; o < k; o++)
                    if (st[o][last] != strides[o][i] * outShape[i]) { merge = false; break; }
                if (merge)
                {
                    dims[last] *= outShape[i];
                    for (int o = 0; o < k; o++) st[o][last] = strides[o][i];
                    continue;
                }
            }
            dims.Add(outShape[i]);
            for (int o = 0; o < k; o++) st[o].Add(strides[o][i]);
        }
        if (dims.Count == 0) { dims.Add(1); for (int o = 0; o < k; o++) st[o].Add(0); }
        Inner = dims[^1];
        InnerStride = st.Select(l => l[^1]).ToArray();
        Outer = dims.Take(dims.Count - 1).ToArray();
        OuterStrides = st.Select(l => l.Take(l.Count - 1).ToArray()).ToArray();
        Rows = 1;
        foreach (var d in Outer) Rows *= d;
    }

    /// <summary>Start offset of operand <paramref name="operand"/> for outer row <paramref name="row"/>.</summary>
    public long Offset(int operand, long row)
    {
        long off = 0;
        var s = OuterStrides[operand];
        for (int i = Outer.Length - 1; i >= 0; i--)
        {
            long idx = row % Outer[i];
            row /= Outer[i];
            off += idx * s[i];
        }
        return off;
    }
}

internal interface IBinaryOp
{
    static abstract T Apply<T>(T a, T b) where T : unmanaged, INumber<T>;
}

internal interface ICompareOp
{
    static abstract bool Apply<T>(T a, T b) where T : unmanaged, INumber<T>;
}

internal struct AddOp : IBinaryOp { public static T Apply<T>(T a, T b) where T : unmanaged, INumber<T> => a + b; }
internal struct SubOp : IBinaryOp { public static T Apply<T>(T a, T b) where T : unmanaged, INumber<T> => a - b; }
internal struct MulOp : IBinaryOp { public static T Apply<T>(T a, T b) where T : unmanaged, INumber<T> => a * b; }
internal struct DivOp : IBinaryOp { public static T Apply<T>(T a, T b) where T : unmanaged, INumber<T> => a / b; }
internal struct MaxOp : IBinaryOp { public static T Apply<T>(T a, T b) where T : unmanaged, INumber<T> => T.IsNaN(a) || T.IsNaN(b) ? a + b : (a > b ? a : b); }
internal struct MinOp : IBinaryOp { public static T Apply<T>(T a, T b) where T : unmanaged, INumber<T> => T.IsNaN(a) || T.IsNaN(b) ? a + b : (a < b ? a : b); }
internal struct ModOp : IBinaryOp
{
    // ONNX Mod with fmod=0: the result has the divisor's sign (Python's %).
    public static T Apply<T>(T a, T b) where T : unmanaged, INumber<T>
    {
        var r = a % b;
        return r != T.Zero && (r < T.Zero) != (b < T.Zero) ? r + b : r;
    }
}
internal struct PowOp : IBinaryOp
{
    // x^2 is exactly x·x, as in torch; other exponents go through double precision.
    public static T Apply<T>(T a, T b) where T : unmanaged, INumber<T> =>
        b == T.CreateTruncating(2) ? a * a : T.CreateTruncating(Math.Pow(double.CreateTruncating(a), double.CreateTruncating(b)));
}

internal struct EqualOp : ICompareOp { public static bool Apply<T>(T a, T b) where T : unmanaged, INumber<T> => a == b; }
internal struct LessOp : ICompareOp { public static bool Apply<T>(T a, T b) where T : unmanaged, INumber<T> => a < b; }
internal struct GreaterOp : ICompareOp { public static bool Apply<T>(T a, T b) where T : unmanaged, INumber<T> => a > b; }
internal struct LessOrEqualOp : ICompareOp { public static bool Apply<T>(T a, T b) where T : unmanaged, INumber<T> => a <= b; }
internal struct GreaterOrEqualOp : ICompareOp { public static bool Apply<T>(T a, T b) where T : unmanaged, INumber<T> => a >= b; }

/// <summary>
/// + − × ÷ on float/double spans through TensorPrimitives (elementwise IEEE results, bit-identical to the scalar
/// loop); false for other ops and element types, which keep the scalar loop.
/// </summary>
internal static class BinaryVectorised<T, TOp> where T : unmanaged, INumber<T> where TOp : IBinaryOp
{
    private static bool Applies => typeof(T) == typeof(float) || typeof(T) == typeof(double);

    public static bool Spans(ReadOnlySpan<T> a, ReadOnlySpan<T> b, Span<T> y)
    {
        if (!Applies) return false;
        if (typeof(TOp) == typeof(AddOp)) TensorPrimitives.Add(a, b, y);
        else if (typeof(TOp) == typeof(SubOp)) TensorPrimitives.Subtract(a, b, y);
        else if (typeof(TOp) == typeof(MulOp)) TensorPrimitives.Multiply(a, b, y);
        else if (typeof(TOp) == typeof(DivOp)) TensorPrimitives.Divide(a, b, y);
        else return false;
        return true;
    }

    public static bool SpanScalar(ReadOnlySpan<T> a, T b, Span<T> y)
    {
        if (!Applies) return false;
        if (typeof(TOp) == typeof(AddOp)) TensorPrimitives.Add(a, b, y);
        else if (typeof(TOp) == typeof(SubOp)) TensorPrimitives.Subtract(a, b, y);
        else if (typeof(TOp) == typeof(MulOp)) TensorPrimitives.Multiply(a, b, y);
        else if (typeof(TOp) == typeof(DivOp)) TensorPrimitives.Divide(a, b, y);
        else return false;
        return true;
    }

    public static bool ScalarSpan(T a, ReadOnlySpan<T> b, Span<T> y)
    {
        if (!Applies) return false;
        if (typeof(TOp) == typeof(AddOp)) TensorPrimitives.Add(b, a, y);
        else if (typeof(TOp) == typeof(SubOp)) TensorPrimitives.Subtract(a, b, y);
        else if (typeof(TOp) == typeof(MulOp)) TensorPrimitives.Multiply(b, a, y);
        else if (typeof(TOp) == typeof(DivOp)) TensorPrimitives.Divide(a, b, y);
        else return false;
        return true;
    }
}

internal static class BroadcastKernels
{
    private const long ParallelThreshold = 1 << 16;

    public static void Binary<T, TOp>(Tensor a, Tensor b, Tensor y) where T : unmanaged, INumber<T> where TOp : IBinaryOp
    {
        if (Shapes.Equal(a.Shape, y.Shape) && Shapes.Equal(b.Shape, y.Shape))
        {
            // No broadcasting (residual adds, gradient sums): one flat loop, vectorised for + − × ÷ on floats.
            var fa = a.ReadOnlySpan<T>(); var fb = b.ReadOnlySpan<T>(); var fy = y.Span<T>();
            if (!BinaryVectorised<T, TOp>.Spans(fa, fb, fy))
                for (int i = 0; i < fy.Length; i++) fy[i] = TOp.Apply(fa[i], fb[i]);
            return;
        }
        var plan = new BroadcastPlan(y.Shape, a.Shape, b.Shape);
        var am = a.Data; var bm = b.Data; var ym = y.Data;
        void Row(long row)
        {
            var sa = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, T>(am.Span);
            var sb = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, T>(bm.Span);
            var sy = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, T>(ym.Span);
            long oa = plan.Offset(0, row), ob = plan.Offset(1, row), oy = row * plan.Inner;
            long ia = plan.InnerStride[0], ib = plan.InnerStride[1];
            int n = plan.Inner;
            if (ia == 1 && ib == 1)
            {
                if (!BinaryVectorised<T, TOp>.Spans(sa.Slice((int)oa, n), sb.Slice((int)ob, n), sy.Slice((int)oy, n)))
                    for (int i = 0; i < n; i++) sy[(int)(oy + i)] = TOp.Apply(sa[(int)(oa + i)], sb[(int)(ob + i)]);
            }
            else if (ia == 1 && ib == 0)
            {
                var bv = sb[(int)ob];
                if (!BinaryVectorised<T, TOp>.SpanScalar(sa.Slice((int)oa, n), bv, sy.Slice((int)oy, n)))
                    for (int i = 0; i < n; i++) sy[(int)(oy + i)] = TOp.Apply(sa[(int)(oa + i)], bv);
            }
            else if (ia == 0 && ib == 1)
            {
                var av = sa[(int)oa];
                if (!BinaryVectorised<T, TOp>.ScalarSpan(av, sb.Slice((int)ob, n), sy.Slice((int)oy, n)))
                    for (int i = 0; i < n; i++) sy[(int)(oy + i)] = TOp.Apply(av, sb[(int)(ob + i)]);
            }
            else
                for (int i = 0; i < n; i++) sy[(int)(oy + i)] = TOp.Apply(sa[(int)(oa + i * ia)], sb[(int)(ob + i * ib)]);
        }
        ForRows(plan, Row);
    }

    public static void Compare<T, TOp>(Tensor a, Tensor b, Tensor y) where T : unmanaged, INumber<T> where TOp : ICompareOp
    {
        var plan = new BroadcastPlan(y.Shape, a.Shape, b.Shape);
        var sa = a.ReadOnlySpan<T>(); var sb = b.ReadOnlySpan<T>(); var sy = y.Data.Span;
        for (long row = 0; row < plan.Rows; row++)
        {
            long oa = plan.Offset(0, row), ob = plan.Offset(1, row), oy = row * plan.Inner;
            for (int i = 0; i < plan.Inner; i++)
                sy[(int)(oy + i)] = TOp.Apply(sa[(int)(oa + i * plan.InnerStride[0])], sb[(int)(ob + i * plan.InnerStride[1])]) ? (byte)1 : (byte)0;
        }
    }

    /// <summary>Elementwise logic on bool operands (And, Or, Xor).</summary>
    public static void Logic(Tensor a, Tensor b, Tensor y, Func<bool, bool, bool> f)
    {
        var plan = new BroadcastPlan(y.Shape, a.Shape, b.Shape);
        var sa = a.Data.Span; var sb = b.Data.Span; var sy = y.Data.Span;
        for (long row = 0; row < plan.Rows; row++)
        {
            long oa = plan.Offset(0, row), ob = plan.Offset(1, row), oy = row * plan.Inner;
            for (int i = 0; i < plan.Inner; i++)
                sy[(int)(oy + i)] = f(sa[(int)(oa + i * plan.InnerStride[0])] != 0, sb[(int)(ob + i * plan.InnerStride[1])] != 0) ? (byte)1 : (byte)0;
        }
    }

    /// <summary>y = cond ? a : b, all three broadcast. Element size only matters, so any dtype works.</summary>
    public static void Where(Tensor cond, Tensor a, Tensor b, Tensor y)
    {
        var plan = new BroadcastPlan(y.Shape, cond.Shape, a.Shape, b.Shape);
        int es = y.DType.Size();
        var sc = cond.Data.Span; var sa = a.Data.Span; var sb = b.Data.Span; var sy = y.Data.Span;
        for (long row = 0; row < plan.Rows; row++)
        {
            long oc = plan.Offset(0, row), oa = plan.Offset(1, row), ob = plan.Offset(2, row), oy = row * plan.Inner;
            for (int i = 0; i < plan.Inner; i++)
            {
                bool c = sc[(int)(oc + i * plan.InnerStride[0])] != 0;
                var src = c ? sa.Slice((int)((oa + i * plan.InnerStride[1]) * es), es) : sb.Slice((int)((ob + i * plan.InnerStride[2]) * es), es);
                src.CopyTo(sy.Slice((int)((oy + i) * es), es));
            }
        }
    }

    /// <summary>Copies <paramref name="x"/> broadcast to y's shape (Expand). Works on bytes, so any dtype.</summary>
    public static void Expand(Tensor x, Tensor y)
    {
        var plan = new BroadcastPlan(y.Shape, x.Shape);
        int es = y.DType.Size();
        var sx = x.Data.Span; var sy = y.Data.Span;
        for (long row = 0; row < plan.Rows; row++)
        {
            long ox = plan.Offset(0, row), oy = row * plan.Inner;
            if (plan.InnerStride[0] == 1)
                sx.Slice((int)(ox * es), plan.Inner * es).CopyTo(sy.Slice((int)(oy * es), plan.Inner * es));
            else
                for (int i = 0; i < plan.Inner; i++)
                    sx.Slice((int)((ox + i * plan.InnerStride[0]) * es), es).CopyTo(sy.Slice((int)((oy + i) * es), es));
        }
    }

    private static void ForRows(BroadcastPlan plan, Action<long> row)
    {
        if (plan.Rows * plan.Inner >= ParallelThreshold && plan.Rows > 1)
            Parallel.For(0L, plan.Rows, new ParallelOptions { MaxDegreeOfParallelism = Environment.ProcessorCount }, r => row(r));
        else
            for (long r = 0; r < plan.Rows; r++) row(r);
    }
}
