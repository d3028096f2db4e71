using System.Numerics;
using CudaDream.Engine.Backends;
using CudaDream.Engine.Backends.Cpu;
using CudaDream.Engine.Backends.Device;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Tensors;
using static CudaDream.Engine.Backends.Cpu.CpuOperands;
using static CudaDream.Engine.Backends.KernelLaunchers;
using static CudaDream.Engine.Graph.Infer;

namespace CudaDream.Engine.Ops;

/// <summary>
/// The training loss: <c>MseLoss(pred, target, weights[B]?)</c> → [1] = Σ_b w_b·mean((pred_b − target_b)²) / B (all w = 1:
/// torch's mse_loss, mean), and <c>MseLossGrad(pred, target, weights?, dloss[1])</c> → d pred. Always fp32.
/// CPU: <see cref="LossReference"/>; devices: <see cref="LossKernels"/> (kernels/loss.cu).
/// </summary>
public static class LossOps
{
    public const string MseLoss = "MseLoss";
    public const string MseLossGrad = "MseLossGrad";

    internal static OpHome Home { get; } = new("Loss", "loss.cu",
    [
        new Op
        {
            Name = MseLoss, InferShapes = n => Set(n, 0, AccumulatorType(In(n, 0).DType), [1]), Float32Inputs = [2],
            Gradient = (n, dy, need, b) => [b.Emit1(MseLossGrad, [n.Input(0), n.Input(1), n.OptionalInput(2), dy[0]]), null, null],
            Cpu = (n, i, o, c) => Dispatch.Float(n, i[0]!.DType, new MseAction(i, o[0], false)),
            Device = s =>
            {
                s.RequireFloat();
                var (pred, target, weights, loss, n, per) = (s.In(0), s.In(1), s.In(2), s.Out(), s.InCount(0), PerSample(s));
                var t = s.InType(0);
                return () => LossKernels.Mse(s.Device, pred.Ptr, target.Ptr, weights.Ptr, loss.Ptr, n, per, t);
            },
        },
        new Op
        {
            Name = MseLossGrad, InferShapes = n => Set(n, 0, In(n, 0).DType, ShapeOf(n, 0)), Float32Inputs = [2, 3],
            Cpu = (n, i, o, c) => Dispatch.Float(n, i[0]!.DType, new MseAction(i, o[0], true)),
            Device = s =>
            {
                s.RequireFloat();
                var (pred, target, weights, dloss, dpred, n, per) = (s.In(0), s.In(1), s.In(2), s.In(3), s.Out(), s.InCount(0), PerSample(s));
                var t = s.InType(0);
                return () => LossKernels.MseBackward(s.Device, pred.Ptr, target.Ptr, weights.Ptr, dloss.Ptr, dpred.Ptr, n, per, t);
            },
        },
    ], Conformance);

    /// <summary>Elements per sample of a [B, …] prediction (the per-sample weights' unit).</summary>
    private static long PerSample(DeviceStepBuilder s) => s.InCount(0) / Math.Max(1, s.InShape(0)[0]);

    private readonly record struct MseAction(Tensor?[] I, Tensor Y, bool Backward) : IFloatAction
    {
        public void Run<T>() where T : unmanaged, IFloatingPointIeee754<T>
        {
            var pred = I[0]!;
            int batch = pred.Shape[0];
            int per = pred.Numel / batch;
            var weights = Optional<T>(I, 2);
            if (!Backward)
                Y.Span<T>()[0] = LossReference.WeightedMse(batch, per, pred.ReadOnlySpan<T>(), I[1]!.ReadOnlySpan<T>(), weights);
            else
                LossReference.WeightedMseBackward(batch, per, pred.ReadOnlySpan<T>(), I[1]!.ReadOnlySpan<T>(), weights, I[3]!.ReadOnlySpan<T>()[0], Y.Span<T>());
        }
    }

    private static IEnumerable<ConformanceCase> Conformance()
    {
        yield return new("train Linear (LinearGradWeight, SumTo, MseLoss with sample weights)", "gemm", b =>
        {
            var w = b.Const(b.Floats([5, 6]));
            var bias = b.Const(b.Floats([5]));
            var x = b.Input(3, 4, 6);
            var y = b.Node1(MatMulOps.Linear, [x, w, bias], a => a.Set("transB", 1L));
            var w2 = b.Const(b.Floats([5, 2]));
            return b.Train(b.Node1(MatMulOps.Linear, [y, w2]), [w, bias, w2], [x.Name], perSampleWeights: true);
        }, 1e-4);
    }
}

/// <summary>Launchers of kernels/loss.cu.</summary>
public static class LossKernels
{
    /// <summary>
    /// loss[0] = (1/n)·Σ w·(pred − target)² with w the weight of each sample of <paramref name="perSample"/>
    /// elements (<see cref="LossReference.WeightedMse{T}"/>); weight may be null (all 1).
    /// </summary>
    public static void Mse(IKernelDevice d, DevicePtr pred, DevicePtr target, DevicePtr weight, DevicePtr loss, long n, long perSample = 0, DType t = DType.F32) =>
        d.Launch(KernelName("mse_loss_forward", t), new Dim3(1), new Dim3(1024), 0,
            new KernelArgs().Ptr(pred).Ptr(target).Ptr(weight).Ptr(loss).I64(n).I64(perSample > 0 ? perSample : Math.Max(n, 1)));

    /// <summary>dpred = dloss[0]·2·w·(pred − target)/n (dloss is a device scalar).</summary>
    public static void MseBackward(IKernelDevice d, DevicePtr pred, DevicePtr target, DevicePtr weight, DevicePtr dloss, DevicePtr dpred, long n, long perSample = 0, DType t = DType.F32) =>
        d.Launch(KernelName("mse_loss_backward", t), Grid1D(n), Block256, 0,
            new KernelArgs().Ptr(pred).Ptr(target).Ptr(weight).Ptr(dloss).Ptr(dpred).I64(n).I64(perSample > 0 ? perSample : Math.Max(n, 1)));
}
