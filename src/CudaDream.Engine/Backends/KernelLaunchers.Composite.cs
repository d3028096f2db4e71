using CudaDream.Engine.Backends.Cpu.Kernels;
using CudaDream.Engine.Tensors;

namespace CudaDream.Engine.Backends;

public static partial class KernelLaunchers
{
    // ------------------------------------------------------------------ conv.cu + GEMM
    /// <summary>Floats of the im2col workspace a convolution needs (0 for a pointwise one).</summary>
    public static long Conv2dWorkspaceElements(in Conv2dGeometry g) =>
        g.IsPointwise ? 0 : (long)g.InChannels * g.KernelH * g.KernelW * g.OutHeight * g.OutWidth;

    private static ConvGeometryArgs ConvArgs(in Conv2dGeometry g)
    {
        if (g.Groups != 1) throw new NotSupportedException("grouped convolution is not implemented on cuda/emu yet");
        if (g.PadTop != g.PadBottom || g.PadLeft != g.PadRight)
            throw new NotSupportedException("asymmetric conv padding: pad with Pad2d first");
        return new ConvGeometryArgs
        {
            C = g.InChannels, H = g.Height, W = g.Width, KH = g.KernelH, KW = g.KernelW, SH = g.StrideH, SW = g.StrideW,
            PH = g.PadTop, PW = g.PadLeft, DH = g.DilationH, DW = g.DilationW, OH = g.OutHeight, OW = g.OutWidth,
        };
    }

    /// <summary>y = conv(x, w) + bias (bias may be null); <paramref name="col"/> holds <see cref="Conv2dWorkspaceElements"/> floats.</summary>
    public static void Conv2dForward(IKernelDevice d, in Conv2dGeometry g, DevicePtr x, DevicePtr w, DevicePtr bias, DevicePtr y, DevicePtr col)
    {
        g.Validate();
        var a = ConvArgs(g);
        int spatial = g.OutHeight * g.OutWidth, ckk = g.InChannels * g.KernelH * g.KernelW;
        long inImage = (long)g.InChannels * g.Height * g.Width * 4, outImage = (long)g.OutChannels * spatial * 4;
        for (int n = 0; n < g.Batch; n++)
        {
            var src = x + n * inImage;
            if (!g.IsPointwise)
            {
                d.Launch("im2col_f32", Grid1D((long)ckk * spatial), Block256, 0, new KernelArgs().Ptr(src).Ptr(col).Value(a));
                src = col;
            }
            MatMul(d, false, false, g.OutChannels, spatial, ckk, w, src, y + n * outImage); // Y[Cout,S] = W[Cout,CKK]·col[CKK,S]
        }
        if (!bias.IsNull)
            d.Launch("channel_bias_add_f32", Grid1D(g.OutputLength), Block256, 0, new KernelArgs().Ptr(y).Ptr(bias).I32(g.Batch).I32(g.OutChannels).I64(spatial));
    }

    /// <summary>
    /// Gradients of <see cref="Conv2dForward"/>: dx (overwritten), dw and dbias (overwritten, or
    /// accumulated when <paramref name="accumulate"/>); any of them may be null.
    /// </summary>
    public static void Conv2dBackward(IKernelDevice d, in Conv2dGeometry g, DevicePtr x, DevicePtr w, DevicePtr dy,
        DevicePtr dx, DevicePtr dw, DevicePtr dbias, DevicePtr col, bool accumulate = false)
    {
        g.Validate();
        var a = ConvArgs(g);
        int spatial = g.OutHeight * g.OutWidth, ckk = g.InChannels * g.KernelH * g.KernelW;
        long inImage = (long)g.InChannels * g.Height * g.Width * 4, outImage = (long)g.OutChannels * spatial * 4;
        for (int n = 0; n < g.Batch; n++)
        {
            var dyn = dy + n * outImage;
            if (!dw.IsNull)
            {
                var src = x + n * inImage;
                if (!g.IsPointwise)
                {
                    d.Launch("im2col_f32", Grid1D((long)ckk * spatial), Block256, 0, new KernelArgs().Ptr(src).Ptr(col).Value(a));
                    src = col;
                }
                MatMul(d, false, true, g.OutChannels, ckk, spatial, dyn, src, dw, beta: accumulate || n > 0 ? 1 : 0); // dW += dY·colᵀ
            }
            if (!dx.IsNull)
            {
                if (g.IsPointwise) MatMul(d, true, false, ckk, spatial, g.OutChannels, w, dyn, dx + n * inImage);
                else
                {
                    MatMul(d, true, false, ckk, spatial, g.OutChannels, w, dyn, col); // dcol = Wᵀ·dY
                    d.Launch("col2im_f32", Grid1D((long)g.InChannels * g.Height * g.Width), Block256, 0, new KernelArgs().Ptr(col).Ptr(dx + n * inImage).Value(a));
                }
            }
        }
        if (!dbias.IsNull)
        {
            if (accumulate) throw new NotSupportedException("accumulating the conv bias gradient: reduce into a scratch buffer and add");
            d.Launch("channel_bias_grad_f32", new Dim3((uint)g.OutChannels), Block256, 0, new KernelArgs().Ptr(dy).Ptr(dbias).I32(g.Batch).I32(g.OutChannels).I64(spatial));
        }
    }

    // ------------------------------------------------------------------ LoRA (GEMMs)
    /// <summary>
    /// LoRA on a linear layer (diffusers LoRALinearLayer): y [M, out] += scale·(x·downᵀ)·upᵀ with
    /// down [r, in], up [out, r]; <paramref name="t"/> is an [M, r] scratch that the backward reuses.
    /// </summary>
    public static void LoraForward(IKernelDevice d, DevicePtr x, DevicePtr down, DevicePtr up, DevicePtr y, DevicePtr t, int M, int inFeatures, int outFeatures, int rank, float scale)
    {
        MatMul(d, false, true, M, rank, inFeatures, x, down, t);                      // t = x·downᵀ
        MatMul(d, false, true, M, outFeatures, rank, t, up, y, alpha: scale, beta: 1); // y += scale·t·upᵀ
    }

    /// <summary>
    /// Gradients of <see cref="LoraForward"/> given dy [M, out] and t from the forward: dup [out, r] and
    /// ddown [r, in] are overwritten; dx [M, in] is accumulated (it already holds the frozen path's
    /// gradient) unless null. <paramref name="dt"/> is an [M, r] scratch.
    /// </summary>
    public static void LoraBackward(IKernelDevice d, DevicePtr x, DevicePtr down, DevicePtr up, DevicePtr t, DevicePtr dy,
        DevicePtr ddown, DevicePtr dup, DevicePtr dx, DevicePtr dt, int M, int inFeatures, int outFeatures, int rank, float scale)
    {
        MatMul(d, true, false, outFeatures, rank, M, dy, t, dup, alpha: scale);   // dup = scale·dyᵀ·t
        MatMul(d, false, false, M, rank, outFeatures, dy, up, dt, alpha: scale);  // dt = scale·dy·up
        MatMul(d, true, false, rank, inFeatures, M, dt, x, ddown);                // ddown = dtᵀ·x
        if (!dx.IsNull) MatMul(d, false, false, M, inFeatures, rank, dt, down, dx, beta: 1); // dx += dt·down
    }

    // ------------------------------------------------------------------ optimizer.cu
    public const long OptimizerChunk = 65536;

    /// <summary>Chunks per tensor the optimizer kernels use for the largest of <paramref name="counts"/>.</summary>
    public static int OptimizerChunks(IEnumerable<long> counts) => (int)Math.Max(1, (counts.DefaultIfEmpty(1).Max() + OptimizerChunk - 1) / OptimizerChunk);

    /// <summary>
    /// Global gradient norm and clip coefficient into clipState [2] (norm, min(1, maxNorm/(norm+1e-6)));
    /// sets the int at <paramref name="nonfinite"/> when a gradient is NaN/Inf. partials: count·chunks floats.
    /// The caller zeroes <paramref name="nonfinite"/> once per step.
    /// </summary>
    public static void GradNorm(IKernelDevice d, DevicePtr slots, int count, int chunks, DevicePtr partials, DevicePtr clipState, DevicePtr nonfinite, float maxNorm, float gradScale = 1)
    {
        d.Launch("grad_norm_partial", new Dim3((uint)chunks, (uint)count), Block256, 0,
            new KernelArgs().Ptr(slots).I32(count).I64(OptimizerChunk).Ptr(partials).I32(chunks).Ptr(nonfinite));
        d.Launch("grad_norm_finalize", new Dim3(1), Block256, 0,
            new KernelArgs().Ptr(partials).I32(count * chunks).F32(maxNorm).F32(gradScale).Ptr(clipState));
    }

    public static void AdamWUpdate(IKernelDevice d, DevicePtr slots, int count, int chunks, in AdamWConfig cfg, DevicePtr clipState, DevicePtr nonfinite) =>
        d.Launch("adamw_update", new Dim3((uint)chunks, (uint)count), Block256, 0,
            new KernelArgs().Ptr(slots).I32(count).I64(OptimizerChunk).Value(cfg).Ptr(clipState).Ptr(nonfinite));

    public static void SgdUpdate(IKernelDevice d, DevicePtr slots, int count, int chunks, in SgdConfig cfg, DevicePtr clipState, DevicePtr nonfinite) =>
        d.Launch("sgd_update", new Dim3((uint)chunks, (uint)count), Block256, 0,
            new KernelArgs().Ptr(slots).I32(count).I64(OptimizerChunk).Value(cfg).Ptr(clipState).Ptr(nonfinite));
}
