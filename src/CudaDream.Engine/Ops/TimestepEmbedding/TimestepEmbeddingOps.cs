using CudaDream.Engine.Backends;
using CudaDream.Engine.Backends.Device;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Tensors;
using static CudaDream.Engine.Backends.KernelLaunchers;
using static CudaDream.Engine.Graph.Infer;

namespace CudaDream.Engine.Ops;

/// <summary>
/// <c>TimestepEmbedding(t[B])</c> → [B, dim]: diffusers' get_timestep_embedding (attributes <c>dim</c>,
/// <c>flip_sin_to_cos</c>, <c>shift</c>, <c>max_period</c>), in fp32 whatever the model's precision. Forward only: a
/// timestep is never trained. CPU: <see cref="TimestepEmbeddingReference"/>; devices: <see cref="TimestepEmbeddingKernels"/>
/// (kernels/timestep.cu).
/// </summary>
public static class TimestepEmbeddingOps
{
    public const string TimestepEmbedding = "TimestepEmbedding";

    internal static OpHome Home { get; } = new("TimestepEmbedding", "timestep.cu",
    [
        new Op
        {
            Name = TimestepEmbedding, Float32Inputs = [0], InferShapes = n => Set(n, 0, DType.F32, [ShapeOf(n, 0)[0], (int)n.Attributes.Int("dim")]),
            Cpu = (n, i, o, c) =>
            {
                var ts = i[0]!.ToFloat32Array();
                TimestepEmbeddingReference.Forward<float>(ts.Length, (int)n.Attributes.Int("dim"), ts, o[0].Span<float>(), n.Attributes.Int("flip_sin_to_cos", 1) != 0,
                    n.Attributes.Float("shift", 0f), 1f, n.Attributes.Float("max_period", 10000f));
            },
            Device = DeviceForward,
        },
    ], Conformance);

    /// <summary>Timesteps of another type (an int64 export) are cast to fp32 in scratch first.</summary>
    private static Action DeviceForward(DeviceStepBuilder s)
    {
        var a = s.Node.Attributes;
        int batch = checked((int)s.InCount(0)), dim = (int)a.Int("dim");
        bool flip = a.Int("flip_sin_to_cos", 1) != 0;
        float shift = a.Float("shift", 0f), maxPeriod = a.Float("max_period", 10000f);
        var (t, y, type) = (s.In(0), s.Out(), s.InType(0));
        var ft = type == DType.F32 ? t : s.Scratch(batch * 4L);
        if (type != DType.F32 && !ElementwiseKernels.CanCast(type, DType.F32)) throw new NotSupportedException($"timesteps of type {type}");
        return () =>
        {
            if (type != DType.F32) ElementwiseKernels.Cast(s.Device, t.Ptr, type, ft.Ptr, DType.F32, batch);
            TimestepEmbeddingKernels.Forward(s.Device, ft.Ptr, y.Ptr, batch, dim, flip, shift, 1f, maxPeriod);
        };
    }

    private static IEnumerable<ConformanceCase> Conformance()
    {
        yield return new("TimestepEmbedding t = 10, 999", "timestep", b =>
            b.Build(b.Node1(TimestepEmbedding, [b.Input(Tensor.FromArray([10f, 999f], 2))],
                a => { a.Set("dim", 32L); a.Set("flip_sin_to_cos", 1L); a.Set("shift", 0f); a.Set("max_period", 10000f); })));
    }
}

/// <summary>Launcher of kernels/timestep.cu.</summary>
public static class TimestepEmbeddingKernels
{
    /// <summary>y [batch, dim] = diffusers' get_timestep_embedding of t [batch] (fp32 in and out).</summary>
    public static void Forward(IKernelDevice d, DevicePtr t, DevicePtr y, int batch, int dim, bool flipSinToCos, float shift, float scale, float maxPeriod) =>
        d.Launch("timestep_embedding_f32", Grid1D((long)batch * dim), Block256, 0,
            new KernelArgs().Ptr(t).Ptr(y).I32(batch).I32(dim).I32(flipSinToCos ? 1 : 0).F32(shift).F32(scale).F32(maxPeriod));
}
