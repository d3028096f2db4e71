using System.Numerics;
using CudaDream.Engine.Backends.Cpu;
using CudaDream.Engine.Backends.Device;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Tensors;
using static CudaDream.Engine.Backends.Cpu.FastKernels;
using static CudaDream.Engine.Graph.Infer;

namespace CudaDream.Engine.Ops;

/// <summary>
/// Scaled dot-product attention, forward and backward. Its home holds all of it:
/// <list type="bullet">
/// <item>the ops (here): <c>Attention(q[B,N,H·d], k[B,M,H·d], v[B,M,H·dv])</c> → y[B,N,H·dv] (+ lse[B,H,N] when
/// differentiated), attributes <c>heads</c>, <c>scale</c>, <c>causal</c>; y = softmax(scale·q·kᵀ (+causal mask))·v per
/// head; and <c>AttentionGrad(q, k, v, o, lse, dO)</c> → dq, dk, dv. Shape rules, multiply-adds, gradient rule.</item>
/// <item>CPU: <see cref="AttentionReference"/> (the oracle, float and double), <see cref="AttentionFast"/>
/// (FlashAttention-2 tiles on <see cref="AttentionTileGemm"/>), <see cref="AttentionNarrow"/> (heads ≤ 8 wide).</item>
/// <item>devices: <see cref="AttentionKernels"/>, the launchers of kernels/attention.cu: fp32-math kernels for every storage
/// type and width (the reference path), and FlashAttention-2 on tensor cores for bf16/fp16 at widths 40–160, forward and backward.</item>
/// <item>the conformance cases that check the device kernels against the CPU.</item>
/// </list>
/// </summary>
public static class AttentionOps
{
    public const string Attention = "Attention";
    public const string AttentionGrad = "AttentionGrad";

    internal static OpHome Home { get; } = new("Attention", "attention.cu",
    [
        new Op
        {
            Name = Attention, InferShapes = InferAttention, MultiplyAdds = AttentionMacs, SavedOutputs = 2, Gradient = Gradient,
            Cpu = (n, i, o, c) => Dispatch.Float(n, i[0]!.DType, new ForwardAction(n, i, o, c)),
            Device = DeviceForward,
        },
        new Op
        {
            Name = AttentionGrad, Float32Inputs = [4], InferShapes = n => { for (int i = 0; i < 3; i++) Set(n, i, In(n, i).DType, ShapeOf(n, i)); },
            // Recompute the scores plus four products (dV, dP, dQ, dK): 2.5× the forward's matrix work.
            MultiplyAdds = n => (long)(2.5 * AttentionMacs(n)),
            Cpu = (n, i, o, c) => Dispatch.Float(n, i[0]!.DType, new BackwardAction(n, i, o, c)),
            Device = DeviceBackward,
        },
    ], Conformance);

    // ------------------------------------------------------------------ shape rules
    /// <summary>(B, N, M, heads, d, dv) of an Attention (or AttentionGrad) node.</summary>
    public static (int B, int N, int M, int H, int D, int Dv) Dims(Node n)
    {
        var q = ShapeOf(n, 0);
        var k = ShapeOf(n, 1);
        var v = ShapeOf(n, 2);
        int h = (int)n.Attributes.Int("heads");
        if (q.Length != 3 || k.Length != 3 || v.Length != 3) throw new GraphException(n, "Attention inputs must be [B, N, H·d]");
        if (q[2] % h != 0 || v[2] % h != 0 || q[2] != k[2] || k[1] != v[1] || q[0] != k[0] || k[0] != v[0])
            throw new GraphException(n, $"Attention shapes q{Shapes.Format(q)} k{Shapes.Format(k)} v{Shapes.Format(v)} do not fit {h} heads");
        return (q[0], q[1], k[1], h, q[2] / h, v[2] / h);
    }

    /// <summary>The kernel geometry of a node (BNHD views of the [B, N, H·d] inputs).</summary>
    public static AttentionShape Shape(Node n)
    {
        var (b, nq, m, h, d, dv) = Dims(n);
        return new AttentionShape(b, nq, m, h, d, dv, n.Attributes.Float("scale", 1f / MathF.Sqrt(d)), n.Attributes.Int("causal", 0) != 0);
    }

    private static void InferAttention(Node n)
    {
        var (b, nq, _, h, _, dv) = Dims(n);
        Set(n, 0, In(n, 0).DType, [b, nq, h * dv]);
        // Optional second output: the log-sum-exp of each query row, kept for the backward pass.
        if (n.Outputs.Count > 1) Set(n, 1, AccumulatorType(In(n, 0).DType), [b, h, nq]);
    }

    private static long AttentionMacs(Node n)
    {
        var (b, nq, m, h, d, dv) = Dims(n);
        return (long)b * h * nq * m * (d + dv);
    }

    // ------------------------------------------------------------------ gradient rule
    /// <summary>One AttentionGrad node reads the forward's output and its saved log-sum-exp (no N×M matrix kept).</summary>
    private static Value?[] Gradient(Node n, Value?[] dy, bool[] need, GradBuilder b)
    {
        if (n.Outputs.Count < 2) throw new GraphException(n, "Attention has no saved log-sum-exp");
        return b.Emit(AttentionGrad, [n.Input(0), n.Input(1), n.Input(2), n.Outputs[0], n.Outputs[1], dy[0]], n.Attributes.Clone(), 3);
    }

    // ------------------------------------------------------------------ CPU
    /// <summary>The CPU entry points: the fast fp32 kernels where they apply, the reference loops otherwise.</summary>
    public static class Cpu
    {
        public static void Forward<T>(CpuContext c, in AttentionShape shape, ReadOnlySpan<T> q, ReadOnlySpan<T> k, ReadOnlySpan<T> v, Span<T> o, Span<T> lse)
            where T : unmanaged, IFloatingPointIeee754<T>
        {
            if (Use<T>(c)) AttentionFast.Forward(shape, F(q), F(k), F(v), F(o), F(lse));
            else AttentionReference.Forward(shape, q, k, v, o, lse);
        }

        public static void Backward<T>(CpuContext c, in AttentionShape shape, ReadOnlySpan<T> q, ReadOnlySpan<T> k, ReadOnlySpan<T> v, ReadOnlySpan<T> o,
            ReadOnlySpan<T> lse, ReadOnlySpan<T> dout, Span<T> dq, Span<T> dk, Span<T> dv)
            where T : unmanaged, IFloatingPointIeee754<T>
        {
            if (Use<T>(c)) AttentionFast.Backward(shape, F(q), F(k), F(v), F(o), F(lse), F(dout), F(dq), F(dk), F(dv));
            else AttentionReference.Backward(shape, q, k, v, o, lse, dout, dq, dk, dv);
        }
    }

    private readonly record struct ForwardAction(Node N, Tensor?[] I, Tensor[] O, CpuContext C) : IFloatAction
    {
        public void Run<T>() where T : unmanaged, IFloatingPointIeee754<T>
        {
            var shape = Shape(N);
            using var ls = Scratch<T>.Rent(O.Length > 1 ? 0 : (int)shape.LseLength);
            var lse = O.Length > 1 ? O[1].Span<T>() : ls.Span;
            Cpu.Forward(C, shape, I[0]!.ReadOnlySpan<T>(), I[1]!.ReadOnlySpan<T>(), I[2]!.ReadOnlySpan<T>(), O[0].Span<T>(), lse);
        }
    }

    private readonly record struct BackwardAction(Node N, Tensor?[] I, Tensor[] O, CpuContext C) : IFloatAction
    {
        public void Run<T>() where T : unmanaged, IFloatingPointIeee754<T> =>
            Cpu.Backward(C, Shape(N), I[0]!.ReadOnlySpan<T>(), I[1]!.ReadOnlySpan<T>(), I[2]!.ReadOnlySpan<T>(), I[3]!.ReadOnlySpan<T>(),
                I[4]!.ReadOnlySpan<T>(), I[5]!.ReadOnlySpan<T>(), O[0].Span<T>(), O[1].Span<T>(), O[2].Span<T>());
    }

    // ------------------------------------------------------------------ devices
    private static AttentionArgs DeviceGeometry(Node n)
    {
        var shape = Shape(n);
        if (shape.ValueDim != shape.HeadDim) throw new NotSupportedException($"attention with value width {shape.ValueDim} ≠ key width {shape.HeadDim}");
        shape.Validate();
        return AttentionKernels.Bnhd(shape);
    }

    private static Action DeviceForward(DeviceStepBuilder s)
    {
        s.RequireFloat();
        var args = DeviceGeometry(s.Node);
        var t = s.InType(0);
        var lse = s.IsUsed(1) ? s.Out(1) : s.Scratch((long)args.Batch * args.Heads * args.QueryLength * 4);
        var (q, k, v, o) = (s.In(0), s.In(1), s.In(2), s.Out());
        return () => AttentionKernels.Forward(s.Device, args, q.Ptr, k.Ptr, v.Ptr, o.Ptr, lse.Ptr, t);
    }

    /// <summary>AttentionGrad(q, k, v, o, lse, dO) → dq, dk, dv; the per-row dO·O (FlashAttention-2's D) lives in scratch.</summary>
    private static Action DeviceBackward(DeviceStepBuilder s)
    {
        s.RequireFloat();
        var args = DeviceGeometry(s.Node);
        var t = s.InType(0);
        var delta = s.Scratch((long)args.Batch * args.Heads * args.QueryLength * 4);
        var (q, k, v, o, lse, dout) = (s.In(0), s.In(1), s.In(2), s.In(3), s.In(4), s.In(5));
        var (dq, dk, dv) = (s.Out(0), s.Out(1), s.Out(2));
        return () => AttentionKernels.Backward(s.Device, args, q.Ptr, k.Ptr, v.Ptr, o.Ptr, dout.Ptr, lse.Ptr, delta.Ptr, dq.Ptr, dk.Ptr, dv.Ptr, t);
    }

    // ------------------------------------------------------------------ conformance
    /// <summary>
    /// Narrow heads (row-per-thread kernels, 16 and 32 wide), causal CLIP, and wide heads (warp kernels in fp32; in bf16/fp16
    /// the tensor-core kernels, whose tiles the last two fill partly: 77 keys in 64-key tiles, 81 rows in 64-row blocks).
    /// </summary>
    private static readonly (string Name, int Batch, int Nq, int Nk, int Heads, int D, bool Causal)[] ConformanceShapes =
    [
        ("unet self d=4", 2, 40, 40, 8, 4, false), ("cross 77 keys d=8", 1, 24, 77, 2, 8, false), ("clip causal d=8", 1, 21, 21, 4, 8, true),
        ("single head d=32", 1, 70, 70, 1, 32, false), ("wide heads d=40", 1, 19, 23, 2, 40, false), ("wide causal d=64", 1, 17, 17, 2, 64, true),
        ("cross 77 keys d=80", 2, 81, 77, 2, 80, false), ("ragged self d=160", 1, 81, 81, 2, 160, false),
    ];

    private static IEnumerable<ConformanceCase> Conformance()
    {
        foreach (var (name, batch, nq, nk, heads, d, causal) in ConformanceShapes)
        {
            void Attributes(Attributes a) { a.Set("heads", (long)heads); a.Set("scale", 1f / MathF.Sqrt(d)); a.Set("causal", causal ? 1L : 0L); }
            yield return new($"Attention {name}", "attention", b =>
                b.Build(b.Node(Attention, [b.Input(batch, nq, heads * d), b.Input(batch, nk, heads * d), b.Input(batch, nk, heads * d)], 2, Attributes)), 1e-5);
            yield return new($"train Attention {name}", "attention", b =>
            {
                var (q, k, v) = (b.Input(batch, nq, heads * d), b.Input(batch, nk, heads * d), b.Input(batch, nk, heads * d));
                return b.Train(b.Node(Attention, [q, k, v], 2, Attributes)[0], [], [q.Name, k.Name, v.Name]);
            }, 1e-4);
        }
    }
}
