using System.Numerics;
using CudaDream.Engine.Backends;
using CudaDream.Engine.Backends.Cpu;
using CudaDream.Engine.Backends.Device;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Tensors;
using static CudaDream.Engine.Backends.Cpu.CpuOperands;
using static CudaDream.Engine.Backends.Cpu.FastKernels;
using static CudaDream.Engine.Backends.KernelLaunchers;
using static CudaDream.Engine.Graph.Infer;

namespace CudaDream.Engine.Ops;

/// <summary>
/// Group normalisation (Wu &amp; He 2018), forward and backward, with the SiLU every SD resnet applies after it:
/// <list type="bullet">
/// <item><c>GroupNorm(x[N,C,...], gamma[C]?, beta[C]?)</c>: <c>groups</c>, <c>epsilon</c>, <c>silu</c> (1 = SiLU applied to
/// the result); differentiated, it also outputs mean and rstd [N·G]. <c>GroupNormGrad(x, gamma?, beta?, mean, rstd, dy)</c>
/// → dx, dgamma, dbeta. ONNX <c>InstanceNormalization</c> is GroupNorm with a group per channel (and becomes one
/// before differentiation).</item>
/// <item>CPU: <see cref="GroupNormReference"/>, <see cref="GroupNormFast"/>; devices: <see cref="GroupNormKernels"/>
/// (kernels/groupnorm.cu); conformance cases.</item>
/// </list>
/// </summary>
public static class GroupNormOps
{
    public const string GroupNorm = "GroupNorm";
    public const string GroupNormGrad = "GroupNormGrad";
    public const string InstanceNormalization = "InstanceNormalization";

    internal static OpHome Home { get; } = new("GroupNorm", "groupnorm.cu",
    [
        new Op
        {
            Name = GroupNorm, SavedOutputs = 3, Gradient = Gradient, Float32Inputs = [1, 2],
            InferShapes = n => { SameAsInput(n); StatisticOutputs(n, ShapeOf(n, 0)[0] * (int)n.Attributes.Int("groups")); },
            Cpu = (n, i, o, c) => Dispatch.Float(n, i[0]!.DType, new ForwardAction(n, i, o, c, (int)n.Attributes.Int("groups"), n.Attributes.Int("silu", 0) != 0)),
            Device = s => DeviceForward(s, (int)s.Node.Attributes.Int("groups"), s.Node.Attributes.Int("silu", 0) != 0),
        },
        new Op
        {
            Name = GroupNormGrad, InferShapes = n => ParameterGradients(n, ShapeOf(n, 0)[1]), Float32Inputs = [1, 2, 3, 4],
            Cpu = (n, i, o, c) => Dispatch.Float(n, i[0]!.DType, new BackwardAction(n, i, o, c)),
            Device = DeviceBackward,
        },
        new Op
        {
            Name = InstanceNormalization, InferShapes = SameAsInput, PrepareForGradient = AsGroupNorm, Float32Inputs = [1, 2],
            Cpu = (n, i, o, c) => Dispatch.Float(n, i[0]!.DType, new ForwardAction(n, i, o, c, i[0]!.Shape[1], false)),
            Device = s => DeviceForward(s, s.InShape(0)[1], false),
        },
    ], Conformance);

    /// <summary>Outputs 1.. (mean, rstd) hold one statistic per (sample, group).</summary>
    internal static void StatisticOutputs(Node n, int count)
    {
        for (int i = 1; i < n.Outputs.Count; i++) Set(n, i, AccumulatorType(In(n, 0).DType), [count]);
    }

    /// <summary>dx has x's shape; dgamma and dbeta one value per channel.</summary>
    internal static void ParameterGradients(Node n, int channels)
    {
        Set(n, 0, In(n, 0).DType, ShapeOf(n, 0));
        for (int i = 1; i < n.Outputs.Count; i++) Set(n, i, AccumulatorType(In(n, 0).DType), [channels]);
    }

    private static void AsGroupNorm(Node n)
    {
        if (n.Outputs.Count != 1) return;
        n.Op = GroupNorm;
        n.Attributes.Set("groups", (long)n.Input(0).Shape![1]).Set("silu", 0L).Set("epsilon", n.Attributes.Float("epsilon", 1e-5f));
    }

    /// <summary>The forward node must carry its mean/rstd outputs (the differentiator adds them: <see cref="OpDef.SavedOutputs"/>).</summary>
    private static Value?[] Gradient(Node n, Value?[] dy, bool[] need, GradBuilder b)
    {
        if (n.Outputs.Count < 3) throw new GraphException(n, "GroupNorm has no saved statistics");
        var outs = b.Emit(GroupNormGrad, [n.Input(0), n.OptionalInput(1), n.OptionalInput(2), n.Outputs[1], n.Outputs[2], dy[0]],
            new Attributes().Set("groups", n.Attributes.Int("groups")).Set("silu", n.Attributes.Int("silu", 0)), 3);
        return [outs[0], n.OptionalInput(1) != null ? outs[1] : null, n.OptionalInput(2) != null ? outs[2] : null];
    }

    // ------------------------------------------------------------------ CPU
    /// <summary>x [N, C, S]: N samples, C channels, S spatial elements.</summary>
    private static (int N, int C, int S) Layout(Tensor x) => (x.Shape[0], x.Shape[1], (int)(x.Numel / Math.Max(1L, (long)x.Shape[0] * x.Shape[1])));

    public static class Cpu
    {
        public static void Forward<T>(CpuContext c, int n, int ch, int s, int groups, T eps, ReadOnlySpan<T> x, ReadOnlySpan<T> gamma, ReadOnlySpan<T> beta,
            Span<T> y, Span<T> mean, Span<T> rstd, bool silu)
            where T : unmanaged, IFloatingPointIeee754<T>
        {
            if (Use<T>(c)) GroupNormFast.Forward(n, ch, s, groups, F(eps), F(x), F(gamma), F(beta), F(y), F(mean), F(rstd), silu);
            else GroupNormReference.Forward(n, ch, s, groups, eps, x, gamma, beta, y, mean, rstd, silu);
        }

        public static void Backward<T>(CpuContext c, int n, int ch, int s, int groups, ReadOnlySpan<T> x, ReadOnlySpan<T> gamma, ReadOnlySpan<T> beta,
            ReadOnlySpan<T> mean, ReadOnlySpan<T> rstd, ReadOnlySpan<T> dy, Span<T> dx, Span<T> dgamma, Span<T> dbeta, bool silu)
            where T : unmanaged, IFloatingPointIeee754<T>
        {
            if (Use<T>(c)) GroupNormFast.Backward(n, ch, s, groups, F(x), F(gamma), F(beta), F(mean), F(rstd), F(dy), F(dx), F(dgamma), F(dbeta), silu);
            else GroupNormReference.Backward(n, ch, s, groups, x, gamma, beta, mean, rstd, dy, dx, dgamma, dbeta, silu);
        }
    }

    /// <summary>Statistics go to outputs 1 and 2 when the node has them (a differentiated forward), else to scratch.</summary>
    private readonly record struct ForwardAction(Node N, Tensor?[] I, Tensor[] O, CpuContext C, int Groups, bool Silu) : IFloatAction
    {
        public void Run<T>() where T : unmanaged, IFloatingPointIeee754<T>
        {
            var x = I[0]!;
            var (n, c, s) = Layout(x);
            T eps = T.CreateTruncating(N.Attributes.Float("epsilon", 1e-5f));
            using var ms = Scratch<T>.Rent(O.Length > 1 ? 0 : n * Groups);
            using var rs = Scratch<T>.Rent(O.Length > 1 ? 0 : n * Groups);
            var mean = O.Length > 1 ? O[1].Span<T>() : ms.Span;
            var rstd = O.Length > 2 ? O[2].Span<T>() : rs.Span;
            Cpu.Forward(C, n, c, s, Groups, eps, x.ReadOnlySpan<T>(), Optional<T>(I, 1), Optional<T>(I, 2), O[0].Span<T>(), mean, rstd, Silu);
        }
    }

    private readonly record struct BackwardAction(Node N, Tensor?[] I, Tensor[] O, CpuContext C) : IFloatAction
    {
        public void Run<T>() where T : unmanaged, IFloatingPointIeee754<T>
        {
            var x = I[0]!;
            var (n, c, s) = Layout(x);
            bool hasGamma = I[1] != null, hasBeta = I[2] != null;
            Cpu.Backward(C, n, c, s, (int)N.Attributes.Int("groups"), x.ReadOnlySpan<T>(), Optional<T>(I, 1), Optional<T>(I, 2),
                I[3]!.ReadOnlySpan<T>(), I[4]!.ReadOnlySpan<T>(), I[5]!.ReadOnlySpan<T>(), O[0].Span<T>(),
                OptionalOut<T>(O, 1, hasGamma), OptionalOut<T>(O, 2, hasBeta), N.Attributes.Int("silu", 0) != 0);
        }
    }

    // ------------------------------------------------------------------ devices
    private static Action DeviceForward(DeviceStepBuilder s, int groups, bool silu)
    {
        s.RequireFloat();
        var shape = s.InShape(0);
        int n = shape[0], c = shape[1];
        long spatial = s.InCount(0) / Math.Max(1L, (long)n * c);
        float eps = s.Node.Attributes.Float("epsilon", 1e-5f);
        var t = s.InType(0);
        var (mean, rstd) = (s.OutOrScratch(1, (long)n * groups * 4), s.OutOrScratch(2, (long)n * groups * 4));
        var (x, gamma, beta, y) = (s.In(0), s.In(1), s.In(2), s.Out());
        var scratch = s.Scratch(GroupNormKernels.ScratchBytes(n, c, spatial, groups));
        return () => GroupNormKernels.Forward(s.Device, x.Ptr, gamma.Ptr, beta.Ptr, y.Ptr, mean.Ptr, rstd.Ptr, scratch.Ptr, n, c, spatial, groups, eps, silu, t);
    }

    /// <summary>GroupNormGrad(x, gamma?, beta?, mean, rstd, dy) → dx, dgamma, dbeta; unread parameter gradients are not computed.</summary>
    private static Action DeviceBackward(DeviceStepBuilder s)
    {
        s.RequireFloat();
        var shape = s.InShape(0);
        int n = shape[0], c = shape[1], groups = (int)s.Node.Attributes.Int("groups");
        long spatial = s.InCount(0) / Math.Max(1L, (long)n * c);
        bool silu = s.Node.Attributes.Int("silu", 0) != 0;
        var t = s.InType(0);
        var (x, gamma, beta, mean, rstd, dy) = (s.In(0), s.In(1), s.In(2), s.In(3), s.In(4), s.In(5));
        var (dx, dgamma, dbeta) = (s.Out(0), s.IsUsed(1) ? s.Out(1) : DeviceAddress.Null, s.IsUsed(2) ? s.Out(2) : DeviceAddress.Null);
        var scratch = s.Scratch(GroupNormKernels.ScratchBytes(n, c, spatial, groups));
        return () => GroupNormKernels.Backward(s.Device, x.Ptr, dy.Ptr, gamma.Ptr, beta.Ptr, mean.Ptr, rstd.Ptr, dx.Ptr, dgamma.Ptr, dbeta.Ptr,
            scratch.Ptr, n, c, spatial, groups, silu, t);
    }

    // ------------------------------------------------------------------ conformance
    private static IEnumerable<ConformanceCase> Conformance()
    {
        yield return new("InstanceNormalization", "groupnorm", b =>
            b.Build(b.Node1(InstanceNormalization, [b.Input(2, 4, 5, 5), b.Const(b.Floats([4])), b.Const(b.Floats([4]))])));
        foreach (bool silu in new[] { false, true })
        {
            yield return new($"GroupNorm silu={silu} with statistics", "groupnorm", b =>
                b.Build(b.Node(GroupNorm, [b.Input(2, 8, 5, 3), b.Const(b.Floats([8])), b.Const(b.Floats([8]))], 3,
                    a => { a.Set("groups", 4L); a.Set("epsilon", 1e-5f); a.Set("silu", silu ? 1L : 0L); })));
            yield return new($"train GroupNorm silu={silu}", "groupnorm", b =>
            {
                var x = b.Input(2, 8, 4, 3);
                var (gamma, beta) = (b.Const(b.Floats([8])), b.Const(b.Floats([8])));
                var y = b.Node(GroupNorm, [x, gamma, beta], 3, a => { a.Set("groups", 2L); a.Set("epsilon", 1e-5f); a.Set("silu", silu ? 1L : 0L); })[0];
                return b.Train(y, [gamma, beta], [x.Name]);
            }, 1e-4);
        }
    }
}

/// <summary>
/// Launchers of kernels/groupnorm.cu. Every pass splits each group into <see cref="Chunks"/> slices (a two-stage
/// reduction) so a batch of one with 32 groups still fills the GPU; the element-wise parts run over the whole tensor.
/// </summary>
public static class GroupNormKernels
{
    /// <summary>Blocks the statistics passes aim for (a few per SM of the largest GPUs).</summary>
    private const int TargetBlocks = 1024;
    /// <summary>Elements a slice holds at least (below that the second stage costs more than it saves).</summary>
    private const long MinSlice = 1024;

    /// <summary>Slices per group for <paramref name="groups"/> groups (N·G) of <paramref name="count"/> elements each.</summary>
    public static int Chunks(long groups, long count) =>
        (int)Math.Clamp(Math.Min((TargetBlocks + groups - 1) / Math.Max(1, groups), count / MinSlice), 1, 65535);

    /// <summary>Workspace bytes of <see cref="Forward"/> and <see cref="Backward"/> for x [N, C, S] in G groups.</summary>
    public static long ScratchBytes(int N, int C, long S, int G)
    {
        long groups = (long)N * G;
        return (groups * Chunks(groups, C / G * S) * 3 + groups * 2) * sizeof(float);
    }

    /// <summary>x [N, C, S] → y = silu?(GroupNorm(x)·gamma + beta); mean, rstd [N, G] fp32 saved for the backward.</summary>
    public static void Forward(IKernelDevice d, DevicePtr x, DevicePtr gamma, DevicePtr beta, DevicePtr y, DevicePtr mean, DevicePtr rstd,
        DevicePtr scratch, int N, int C, long S, int G, float eps, bool silu, DType t = DType.F32)
    {
        if (C % G != 0) throw new ArgumentException($"{C} channels are not divisible into {G} groups");
        int groups = N * G, chunks = Chunks(groups, C / G * S);
        d.Launch(KernelName("groupnorm_stats_partial", t), new Dim3((uint)chunks, (uint)groups), Block256, 0,
            new KernelArgs().Ptr(x).Ptr(scratch).I32(C).I64(S).I32(G).I32(chunks));
        d.Launch("groupnorm_stats_finalize", Grid1D(groups), Block256, 0,
            new KernelArgs().Ptr(scratch).Ptr(mean).Ptr(rstd).I32(groups).I32(chunks).F32(eps));
        long total = (long)N * C * S;
        d.Launch(KernelName("groupnorm_apply", t), Grid1D(total), Block256, 0,
            new KernelArgs().Ptr(x).Ptr(gamma).Ptr(beta).Ptr(mean).Ptr(rstd).Ptr(y).I32(C).I64(S).I32(G).I32(silu ? 1 : 0).I64(total));
    }

    /// <summary>dx, dgamma and dbeta of <see cref="Forward"/>; each may be null (not computed).</summary>
    public static void Backward(IKernelDevice d, DevicePtr x, DevicePtr dy, DevicePtr gamma, DevicePtr beta, DevicePtr mean, DevicePtr rstd,
        DevicePtr dx, DevicePtr dgamma, DevicePtr dbeta, DevicePtr scratch, int N, int C, long S, int G, bool silu, DType t = DType.F32)
    {
        int groups = N * G;
        long count = C / G * S;
        int chunks = Chunks(groups, count);
        if (!dx.IsNull)
        {
            var moments = scratch + (long)groups * chunks * 3 * sizeof(float);
            d.Launch(KernelName("groupnorm_backward_partial", t), new Dim3((uint)chunks, (uint)groups), Block256, 0,
                new KernelArgs().Ptr(x).Ptr(dy).Ptr(gamma).Ptr(beta).Ptr(mean).Ptr(rstd).Ptr(scratch).I32(C).I64(S).I32(G).I32(silu ? 1 : 0).I32(chunks));
            d.Launch("groupnorm_backward_finalize", Grid1D(groups), Block256, 0,
                new KernelArgs().Ptr(scratch).Ptr(moments).I32(groups).I32(chunks).I64(count));
            long total = (long)N * C * S;
            d.Launch(KernelName("groupnorm_backward_apply", t), Grid1D(total), Block256, 0,
                new KernelArgs().Ptr(x).Ptr(dy).Ptr(gamma).Ptr(beta).Ptr(mean).Ptr(rstd).Ptr(moments).Ptr(dx).I32(C).I64(S).I32(G).I32(silu ? 1 : 0).I64(total));
        }
        if (!dgamma.IsNull || !dbeta.IsNull)
            d.Launch(KernelName("groupnorm_backward_affine", t), new Dim3((uint)C), Block256, 0,
                new KernelArgs().Ptr(x).Ptr(dy).Ptr(gamma).Ptr(beta).Ptr(mean).Ptr(rstd).Ptr(dgamma).Ptr(dbeta).I32(N).I32(C).I64(S).I32(G).I32(silu ? 1 : 0));
    }
}
