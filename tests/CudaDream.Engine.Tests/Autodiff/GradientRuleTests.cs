using CudaDream.Engine.Autodiff;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Ops;
using Xunit;

namespace CudaDream.Engine.Tests.Autodiff;

/// <summary>Every gradient rule against finite differences in float64 (DESIGN.md: gradients are shown against something we did not write).</summary>
public class GradientRuleTests
{
    private static Attributes A() => new();

    [Theory]
    [InlineData(0L, 1f, true)]
    [InlineData(1L, 1f, false)]
    [InlineData(1L, 0.75f, true)]
    public void Linear(long transB, float alpha, bool bias)
    {
        var c = new GradCheck();
        var x = c.Input(new[] { 2, 3, 5 });
        var w = c.Weight(transB == 1 ? new[] { 4, 5 } : new[] { 5, 4 });
        var b = bias ? c.Weight(new[] { 4 }) : null;
        var y = c.Node1(MatMulOps.Linear, A().Set("transB", transB).Set("alpha", alpha), x, w, b);
        c.Check(y);
    }

    [Theory]
    [InlineData(3, 1, 1, 1)]
    [InlineData(3, 2, 1, 1)]
    [InlineData(1, 1, 0, 1)]
    [InlineData(3, 2, 0, 1)]
    [InlineData(3, 1, 1, 2)]
    public void Conv(int k, int stride, int pad, int groups)
    {
        var c = new GradCheck();
        var x = c.Input(new[] { 2, 4, 7, 6 });
        var w = c.Weight(new[] { 6, 4 / groups, k, k });
        var b = c.Weight(new[] { 6 });
        var y = c.Node1("Conv", A().Set("strides", new long[] { stride, stride }).Set("pads", new long[] { pad, pad, pad, pad }).Set("group", groups), x, w, b);
        c.Check(y);
    }

    [Theory]
    [InlineData(false, true)]
    [InlineData(true, true)]
    [InlineData(true, false)]
    public void GroupNorm(bool silu, bool affine)
    {
        var c = new GradCheck();
        var x = c.Input(new[] { 2, 6, 3, 4 }, scale: 2);
        var g = affine ? c.Weight(new[] { 6 }, offset: 1) : null;
        var b = affine ? c.Weight(new[] { 6 }) : null;
        var y = c.Node1(GroupNormOps.GroupNorm, A().Set("groups", 3L).Set("epsilon", 1e-5f).Set("silu", silu ? 1L : 0L), x, g, b);
        c.Check(y);
    }

    [Fact]
    public void LayerNorm()
    {
        var c = new GradCheck();
        var x = c.Input(new[] { 2, 3, 8 }, scale: 3);
        var y = c.Node1(LayerNormOps.LayerNorm, A().Set("epsilon", 1e-5f), x, c.Weight(new[] { 8 }, offset: 1), c.Weight(new[] { 8 }));
        c.Check(y);
    }

    [Theory]
    [InlineData(5, 5, 2, 3, false)]
    [InlineData(5, 7, 2, 4, false)]
    [InlineData(6, 6, 3, 2, true)]
    public void Attention(int n, int m, int heads, int d, bool causal)
    {
        var c = new GradCheck();
        var q = c.Input(new[] { 2, n, heads * d });
        var k = c.Input(new[] { 2, m, heads * d });
        var v = c.Input(new[] { 2, m, heads * d });
        var y = c.Node1(AttentionOps.Attention, A().Set("heads", heads).Set("scale", 0.4f).Set("causal", causal ? 1L : 0L), q, k, v);
        c.Check(y);
    }

    [Theory]
    [InlineData(ActivationOps.Gelu)]
    [InlineData(ActivationOps.Silu)]
    [InlineData(ActivationOps.QuickGelu)]
    [InlineData(ActivationOps.Geglu)]
    [InlineData("Sigmoid")]
    [InlineData("Tanh")]
    [InlineData("Erf")]
    [InlineData("Exp")]
    [InlineData("Neg")]
    public void Activations(string op)
    {
        var c = new GradCheck();
        var x = c.Input(new[] { 3, 8 }, scale: 1.5);
        c.Check(c.Node1(op, x));
    }

    [Fact]
    public void SqrtAndSquare()
    {
        var c = new GradCheck();
        var x = c.Input(new[] { 3, 4 });
        var sq = c.Node1("Pow", x, c.Const(new[] { 2.0 }, System.Array.Empty<int>()));
        var shifted = c.Node1("Add", sq, c.Const(new[] { 0.5 }, System.Array.Empty<int>()));
        c.Check(c.Node1("Sqrt", shifted));
    }

    [Theory]
    [InlineData("Add")]
    [InlineData("Sub")]
    [InlineData("Mul")]
    [InlineData("Div")]
    public void BroadcastBinary(string op)
    {
        var c = new GradCheck();
        var a = c.Input(new[] { 2, 3, 4 });
        var b = op == "Div" ? c.Weight(new[] { 3, 1 }, offset: 3) : c.Weight(new[] { 3, 1 });
        c.Check(c.Node1(op, a, b));
    }

    [Fact]
    public void ShapeOps()
    {
        var c = new GradCheck();
        var x = c.Input(new[] { 2, 3, 4 });
        var t = c.Node1("Transpose", A().Set("perm", new long[] { 2, 0, 1 }), x);
        var r = c.Node1("Reshape", t, c.ConstLongs(new long[] { 4, 6 }));
        var u = c.Node1("Unsqueeze", r, c.ConstLongs(new long[] { 0 }));
        var e = c.Node1("Expand", u, c.ConstLongs(new long[] { 3, 4, 6 }));
        var s = c.Node1("Slice", e, c.ConstLongs(new long[] { 1 }), c.ConstLongs(new long[] { 5 }), c.ConstLongs(new long[] { 2 }));
        var cat = c.Node1("Concat", A().Set("axis", 2L), s, e);
        c.Check(cat);
    }

    [Fact]
    public void SoftmaxAndReductions()
    {
        var c = new GradCheck();
        var x = c.Input(new[] { 2, 3, 5 });
        var sm = c.Node1("Softmax", A().Set("axis", -1L), x);
        var mean = c.Node1("ReduceMean", A().Set("axes", new long[] { 1 }).Set("keepdims", 1L), sm);
        c.Check(c.Node1("Mul", mean, c.Node1("ReduceSum", A().Set("axes", new long[] { -1 }).Set("keepdims", 1L), x)));
    }

    [Fact]
    public void BatchedMatMulWithBroadcast()
    {
        var c = new GradCheck();
        var a = c.Input(new[] { 2, 3, 4, 5 });
        var b = c.Weight(new[] { 3, 5, 2 });
        c.Check(c.Node1("MatMul", a, b));
    }

    [Fact]
    public void UpsampleNearest()
    {
        var c = new GradCheck();
        var x = c.Input(new[] { 1, 2, 3, 4 });
        c.Check(c.Node1(ResizeOps.UpsampleNearest, A().Set("size", new long[] { 6, 8 }), x));
    }

    [Fact]
    public void CounterDropoutIsItsOwnBackward()
    {
        var c = new GradCheck();
        var x = c.Input(new[] { 4, 16 });
        c.Check(c.Node1(RandomOps.CounterDropout, A().Set("p", 0.3f).Set("stream", 5L), x));
    }

    [Fact]
    public void WeightedMseLoss()
    {
        var c = new GradCheck();
        var pred = c.Input(new[] { 3, 2, 4 });
        var target = c.Input(new[] { 3, 2, 4 }, wrt: false);
        var weights = c.Const(new[] { 1.0, 0.5, 2.0 }, new[] { 3 });
        c.Check(c.Node1(LossOps.MseLoss, pred, target, weights));
    }

    [Fact]
    public void FanOutAccumulates()
    {
        // y = x·x + x: x feeds three uses.
        var c = new GradCheck();
        var x = c.Input(new[] { 5 });
        c.Check(c.Node1("Add", c.Node1("Mul", x, x), x));
    }

    [Fact]
    public void FrozenWeightsGetNoGradientWork()
    {
        var c = new GradCheck();
        var x = c.Input(new[] { 2, 5 });
        var w = c.Weight(new[] { 4, 5 }, wrt: false);
        var y = c.Node1(MatMulOps.Linear, A().Set("transB", 1L), x, w);
        c.Check(y);
        Assert.DoesNotContain(c.Graph.Nodes, n => n.Op == MatMulOps.LinearGradWeight);
    }
}

public class UnfusedGradientRuleTests
{
    private static Attributes A() => new();

    [Theory]
    [InlineData(false, true)]
    [InlineData(true, false)]
    [InlineData(true, true)]
    public void Gemm(bool transA, bool transB)
    {
        var c = new GradCheck();
        var a = c.Input(transA ? new[] { 5, 3 } : new[] { 3, 5 });
        var w = c.Weight(transB ? new[] { 4, 5 } : new[] { 5, 4 });
        var bias = c.Weight(new[] { 4 });
        c.Check(c.Node1("Gemm", A().Set("transA", transA ? 1L : 0L).Set("transB", transB ? 1L : 0L).Set("alpha", 0.7f).Set("beta", 1.3f), a, w, bias));
    }

    [Fact]
    public void InstanceNormalizationAsGroupNorm()
    {
        var c = new GradCheck();
        var x = c.Input(new[] { 2, 3, 10 }, scale: 2);
        c.Check(c.Node1("InstanceNormalization", A().Set("epsilon", 1e-5f), x, c.Weight(new[] { 3 }, offset: 1), c.Weight(new[] { 3 })));
    }

    [Fact]
    public void LayerNormalizationOverTheLastAxis()
    {
        var c = new GradCheck();
        var x = c.Input(new[] { 2, 3, 6 }, scale: 2);
        c.Check(c.Node1("LayerNormalization", A().Set("axis", -1L).Set("epsilon", 1e-5f), x, c.Weight(new[] { 6 }, offset: 1), c.Weight(new[] { 6 })));
    }

    [Fact]
    public void ConstantPadAndNearestResize()
    {
        var c = new GradCheck();
        var x = c.Input(new[] { 1, 2, 3, 4 });
        var padded = c.Node1("Pad", A().Set("mode", "constant"), x, c.ConstLongs(new long[] { 0, 0, 0, 0, 0, 0, 1, 1 }));
        var resized = c.Node1("Resize", A().Set("mode", "nearest").Set("coordinate_transformation_mode", "asymmetric").Set("nearest_mode", "floor"),
            padded, null, c.Const(new[] { 1.0, 1, 2, 2 }, new[] { 4 }).Let(v => { v.Constant = v.Constant!.To(CudaDream.Engine.Tensors.DType.F32); v.DType = CudaDream.Engine.Tensors.DType.F32; }));
        c.Check(resized);
    }
}

internal static class ValueExtensions
{
    public static CudaDream.Engine.Graph.Value Let(this CudaDream.Engine.Graph.Value v, Action<CudaDream.Engine.Graph.Value> f) { f(v); return v; }
}
