using System.Runtime.InteropServices;
using CudaDream.Engine.Backends;
using CudaDream.Engine.Tensors;
using static CudaDream.Engine.Backends.KernelLaunchers;

namespace CudaDream.Engine.Ops;

/// <summary>kernels/attention.cu AttentionShape: element strides per (batch, head, row).</summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct AttentionArgs
{
    public int Batch, Heads, QueryLength, KeyLength, HeadDim, Causal;
    public float Scale;
    private int _pad;
    public fixed long QStride[3];
    public fixed long KStride[3];
    public fixed long VStride[3];
    public fixed long OStride[3];
}

/// <summary>The kernel families of the attention forward and backward.</summary>
public enum AttentionKernelFamily
{
    /// <summary>fp32 math, one thread per query row (heads ≤ 32 wide).</summary>
    RowPerThread,
    /// <summary>fp32 math, one warp per query row (any width).</summary>
    WarpPerRow,
    /// <summary>FlashAttention-2 on tensor cores (bf16/fp16 storage, mma.sync m16n8k16).</summary>
    TensorCore,
}

/// <summary>
/// Launchers of kernels/attention.cu, written once against <see cref="IKernelDevice"/> so cuda and emu run
/// identical host code; each follows the launch contract in the kernel file's header comment. The element
/// type is a parameter (the kernels are instantiated for fp32 today; tiles are staged in fp32 shared memory).
/// </summary>
public static class AttentionKernels
{
    /// <summary>Warps per block and tile rows of the warp-per-row kernels for head width D.</summary>
    public static (int Warps, int Tile) Tiling(int headDim) =>
        (headDim <= 256 ? 4 : headDim <= 512 ? 2 : 1, Math.Clamp(2048 / headDim, 1, 32));

    /// <summary>The kernel argument for the CPU reference's BNHD layout (q [B,N,H,D], k/v [B,M,H,D], o [B,N,H,D]).</summary>
    public static unsafe AttentionArgs Bnhd(in AttentionShape s)
    {
        if (s.ValueDim != s.HeadDim) throw new NotSupportedException("attention with a value width different from the key width");
        var a = new AttentionArgs
        {
            Batch = s.Batch, Heads = s.Heads, QueryLength = s.QueryLength, KeyLength = s.KeyLength, HeadDim = s.HeadDim,
            Causal = s.Causal ? 1 : 0, Scale = (float)s.Scale,
        };
        long hd = (long)s.Heads * s.HeadDim;
        a.QStride[0] = s.QueryLength * hd; a.QStride[1] = s.HeadDim; a.QStride[2] = hd;
        a.KStride[0] = s.KeyLength * hd; a.KStride[1] = s.HeadDim; a.KStride[2] = hd;
        a.VStride[0] = s.KeyLength * hd; a.VStride[1] = s.HeadDim; a.VStride[2] = hd;
        a.OStride[0] = s.QueryLength * hd; a.OStride[1] = s.HeadDim; a.OStride[2] = hd;
        return a;
    }

    private static void CheckShared(int bytes, int headDim)
    {
        if (bytes > 48 * 1024) throw new NotSupportedException($"attention head width {headDim} needs {bytes} bytes of shared memory (> 48 KiB)");
    }

    /// <summary>Threads (one row each) per block and tile rows of the row-per-thread attention kernels.</summary>
    private const int RowsBlock = 128, RowsTile = 64;

    /// <summary>Bytes of one staged element: tiles are fp32 in shared memory whatever the storage type.</summary>
    private const int Staged = sizeof(float);

    /// <summary>The register width (16 or 32) of the row-per-thread kernels for head width D, or 0 when D needs the warp kernels.</summary>
    public static int RowsWidth(int headDim) => headDim <= 16 ? 16 : headDim <= 32 ? 32 : 0;

    /// <summary>
    /// o = softmax(scale·q·kᵀ)·v per (batch, head), lse [B, H, Nq] saved for the backward. bf16/fp16 storage on a device
    /// with their tensor cores runs the FlashAttention-2 mma kernel where it applies (<see cref="ChooseForward"/>); otherwise
    /// heads up to 32 wide run the row-per-thread kernels unless <paramref name="warpPerRow"/> forces the warp kernels,
    /// which take every other width (the fp32-math reference path for every storage type).
    /// </summary>
    public static void Forward(IKernelDevice d, in AttentionArgs s, DevicePtr q, DevicePtr k, DevicePtr v, DevicePtr o, DevicePtr lse, DType t = DType.F32, bool warpPerRow = false)
    {
        var kernel = warpPerRow ? AttentionKernelFamily.WarpPerRow : ChooseForward(d.ComputeCapability, s, t, q, k, v, o);
        Forward(d, s, q, k, v, o, lse, t, kernel);
    }

    /// <summary><see cref="Forward(IKernelDevice, in AttentionArgs, DevicePtr, DevicePtr, DevicePtr, DevicePtr, DevicePtr, DType, bool)"/> by a chosen kernel family.</summary>
    public static void Forward(IKernelDevice d, in AttentionArgs s, DevicePtr q, DevicePtr k, DevicePtr v, DevicePtr o, DevicePtr lse, DType t, AttentionKernelFamily kernel)
    {
        if (kernel == AttentionKernelFamily.TensorCore)
        {
            ForwardTensorCore(d, s, q, k, v, o, lse, t);
            return;
        }
        int width = RowsWidth(s.HeadDim);
        if (width > 0 && kernel == AttentionKernelFamily.RowPerThread)
        {
            var rowsGrid = new Dim3((uint)((s.QueryLength + RowsBlock - 1) / RowsBlock), (uint)s.Heads, (uint)s.Batch);
            d.Launch(KernelName($"attention_rows_forward_d{width}", t), rowsGrid, new Dim3(RowsBlock), 2 * RowsTile * s.HeadDim * Staged,
                new KernelArgs().Value(s).Ptr(q).Ptr(k).Ptr(v).Ptr(o).Ptr(lse).I32(RowsTile));
            return;
        }
        var (warps, tile) = Tiling(s.HeadDim);
        int smem = (2 * tile * s.HeadDim + 2 * warps * s.HeadDim) * Staged;
        CheckShared(smem, s.HeadDim);
        var grid = new Dim3((uint)((s.QueryLength + warps - 1) / warps), (uint)s.Heads, (uint)s.Batch);
        d.Launch(KernelName("attention_forward", t), grid, new Dim3((uint)(32 * warps)), smem, new KernelArgs().Value(s).Ptr(q).Ptr(k).Ptr(v).Ptr(o).Ptr(lse).I32(tile));
    }

    // ------------------------------------------------------------------ tensor cores
    /// <summary>Query rows per block of the tensor-core kernels: 4 warps of 16 (one m16n8k16 row block each).</summary>
    public const int TensorCoreQueryRows = 64;

    /// <summary>
    /// Head widths the tensor-core forward is chosen for by default: 40 (SD 1.5's first level) up to 160, multiples of 8.
    /// The kernel itself takes any multiple of 8 up to 160 (<see cref="TensorCoreTiling"/>); narrower heads keep the
    /// row-per-thread fp32-math kernels, built for ≤ 32-wide rows held in one thread's registers, which the embedded test
    /// models (4- and 8-wide heads) and their recorded whole-network numbers rest on.
    /// </summary>
    public const int TensorCoreMinAutoWidth = 40, TensorCoreMaxWidth = 160;

    /// <summary>
    /// The register class (the kernel's DMAX: accumulator and Q-fragment arrays sized for that width) and key-tile rows of
    /// the tensor-core forward for head width D, or null when it does not take D (not a multiple of 8, or over 160: the
    /// VAE's 512-wide head keeps the fp32-math warp kernels). Per class: D ≤ 64 and ≤ 80 stage 64-key tiles (SD 1.5's 40 and
    /// 80 wide heads: registers and the 45 KiB double buffer both fit); above 80 the key tile is 32 rows, because a 64-row
    /// double buffer of K and V would exceed 48 KiB of shared memory and the 16×D fp32 O accumulator (80 registers at
    /// 160) needs the registers a 64-key S tile would take. 160 is one class of its own rather than a split along D: a
    /// split would compute Q·Kᵀ twice.
    /// </summary>
    public static (int RegisterWidth, int KeyTile)? TensorCoreTiling(int headDim) => headDim switch
    {
        < 8 or > TensorCoreMaxWidth => null,
        _ when headDim % 8 != 0 => null,
        <= 64 => (64, 64),
        <= 80 => (80, 64),
        <= 128 => (128, 32),
        _ => (160, 32),
    };

    /// <summary>Row pitch in b16 elements of a staged tile (kernels/attention.cu mma_tile_pitch): an odd count of 16-byte pieces.</summary>
    public static int TensorCorePitch(int headDim) => (headDim / 8) % 2 == 1 ? headDim : headDim + 8;

    /// <summary>Dynamic shared memory of the tensor-core forward: two buffers of a K and a V tile (Q waits in the second).</summary>
    public static int TensorCoreForwardSharedBytes(int headDim) =>
        4 * TensorCoreTiling(headDim)!.Value.KeyTile * TensorCorePitch(headDim) * sizeof(ushort);

    /// <summary>Whether a device of compute capability <paramref name="cc"/> has mma.sync for storage type <paramref name="t"/> (f16 sm_75+, bf16 sm_80+).</summary>
    public static bool HasTensorCores(int cc, DType t) => t switch
    {
        DType.F16 => cc >= 75,
        DType.BF16 => cc >= 80,
        _ => false,
    };

    /// <summary>
    /// Whether the tensor-core kernel can read these tensors: every row starts 16 bytes aligned (16-byte cp.async), i.e.
    /// 16-byte aligned base addresses and strides that are multiples of 8 elements, and o rows take 4-byte stores.
    /// </summary>
    public static unsafe bool TensorCoreLayoutFits(in AttentionArgs s, DevicePtr q, DevicePtr k, DevicePtr v, DevicePtr o)
    {
        if (((q.Address | k.Address | v.Address | o.Address) & 15) != 0) return false;
        for (int i = 0; i < 3; i++)
        {
            if (s.QStride[i] % 8 != 0 || s.KStride[i] % 8 != 0 || s.VStride[i] % 8 != 0 || s.OStride[i] % 8 != 0) return false;
        }
        return true;
    }

    /// <summary>The forward kernel family <see cref="Forward(IKernelDevice, in AttentionArgs, DevicePtr, DevicePtr, DevicePtr, DevicePtr, DevicePtr, DType, bool)"/> runs for these arguments.</summary>
    public static AttentionKernelFamily ChooseForward(int computeCapability, in AttentionArgs s, DType t, DevicePtr q, DevicePtr k, DevicePtr v, DevicePtr o)
    {
        if (HasTensorCores(computeCapability, t) && s.HeadDim >= TensorCoreMinAutoWidth && TensorCoreTiling(s.HeadDim) != null
            && TensorCoreLayoutFits(s, q, k, v, o))
            return AttentionKernelFamily.TensorCore;
        return RowsWidth(s.HeadDim) > 0 ? AttentionKernelFamily.RowPerThread : AttentionKernelFamily.WarpPerRow;
    }

    /// <summary>
    /// The FlashAttention-2 forward on tensor cores (kernels/attention.cu attention_mma_forward): bf16/fp16 storage,
    /// fp32 accumulation and softmax statistics, fp32 lse. Throws when the device, type, width or layout does not fit.
    /// </summary>
    public static void ForwardTensorCore(IKernelDevice d, in AttentionArgs s, DevicePtr q, DevicePtr k, DevicePtr v, DevicePtr o, DevicePtr lse, DType t)
    {
        if (!HasTensorCores(d.ComputeCapability, t))
            throw new NotSupportedException($"tensor-core attention needs bf16 on sm_80+ or fp16 on sm_75+ (got {t} on sm_{d.ComputeCapability})");
        var tiling = TensorCoreTiling(s.HeadDim) ?? throw new NotSupportedException($"tensor-core attention takes head widths that are multiples of 8 up to {TensorCoreMaxWidth}, not {s.HeadDim}");
        if (!TensorCoreLayoutFits(s, q, k, v, o))
            throw new NotSupportedException("tensor-core attention needs 16-byte aligned tensors whose strides are multiples of 8 elements");
        int smem = TensorCoreForwardSharedBytes(s.HeadDim);
        CheckShared(smem, s.HeadDim);
        var grid = new Dim3((uint)((s.QueryLength + TensorCoreQueryRows - 1) / TensorCoreQueryRows), (uint)s.Heads, (uint)s.Batch);
        d.Launch(KernelName($"attention_mma_forward_d{tiling.RegisterWidth}", t), grid, new Dim3(128), smem,
            new KernelArgs().Value(s).Ptr(q).Ptr(k).Ptr(v).Ptr(o).Ptr(lse));
    }

    /// <summary>
    /// The tensor-core backward of one register class: the dQ kernel's key tile (like the forward's), and the dK/dV kernel,
    /// its keys and threads per block and its query tile.
    /// </summary>
    public sealed record TensorCoreBackwardPlan(int RegisterWidth, int DqKeyTile, string DkvKernel, int DkvKeys, int DkvThreads, int DkvQueryTile)
    {
        /// <summary>Dynamic shared memory of the dQ kernel: two buffers of a K and a V tile (Q and dO are staged there first).</summary>
        public int DqSharedBytes(int headDim) => 4 * DqKeyTile * TensorCorePitch(headDim) * sizeof(ushort);

        /// <summary>
        /// Dynamic shared memory of the dK/dV kernel: two buffers of a Q and a dO tile with their lse and delta, and the block's
        /// K and V rows (staged first into the buffers when the fragments go to registers, kept beside them in the wide kernel).
        /// </summary>
        public int DkvSharedBytes(int headDim)
        {
            int pitch = TensorCorePitch(headDim), keys = 2 * DkvKeys * pitch * sizeof(ushort);
            int buffers = 2 * (2 * DkvQueryTile * pitch * sizeof(ushort) + 2 * DkvQueryTile * sizeof(float));
            return DkvKernel.EndsWith("_wide", StringComparison.Ordinal) ? keys + buffers : Math.Max(keys, buffers);
        }
    }

    /// <summary>
    /// The tensor-core backward for head width D (any the forward takes), or null. Up to 80 wide the dK/dV kernel holds
    /// its 16 keys' K and V fragments and both dK and dV accumulators in registers (2·D/2 + 2·D of them) and walks 64-query
    /// (d64) or 32-query (d80) tiles with 4 warps over 64 keys. Wider, those would not fit: attention_mma_backward_dkv_wide
    /// keeps K and V in shared memory (fragments per k step; 2 warps over 32 keys, 16-query tiles, within 48 KiB at 160)
    /// and only the accumulators in registers. The dQ kernel walks the forward's key tiles (64 up to 80 wide, else 32).
    /// </summary>
    public static TensorCoreBackwardPlan? TensorCoreBackwardTiling(int headDim) => TensorCoreTiling(headDim) switch
    {
        null => null,
        { RegisterWidth: <= 80 } f => new(f.RegisterWidth, 64, "attention_mma_backward_dkv", 64, 128, f.RegisterWidth == 64 ? 64 : 32),
        var f => new(f.Value.RegisterWidth, 32, "attention_mma_backward_dkv_wide", 32, 64, 16),
    };

    /// <summary>The kernel family <see cref="Backward(IKernelDevice, in AttentionArgs, DevicePtr, DevicePtr, DevicePtr, DevicePtr, DevicePtr, DevicePtr, DevicePtr, DevicePtr, DevicePtr, DevicePtr, DType, bool)"/> runs for these arguments.</summary>
    public static AttentionKernelFamily ChooseBackward(int computeCapability, in AttentionArgs s, DType t, DevicePtr q, DevicePtr k, DevicePtr v, DevicePtr o,
        DevicePtr dout, DevicePtr dq, DevicePtr dk, DevicePtr dv)
    {
        if (HasTensorCores(computeCapability, t) && s.HeadDim >= TensorCoreMinAutoWidth && TensorCoreBackwardTiling(s.HeadDim) != null
            && TensorCoreLayoutFits(s, q, k, v, o) && TensorCoreLayoutFits(s, dq, dk, dv, dout))
            return AttentionKernelFamily.TensorCore;
        return RowsWidth(s.HeadDim) > 0 ? AttentionKernelFamily.RowPerThread : AttentionKernelFamily.WarpPerRow;
    }

    /// <summary>
    /// The FlashAttention-2 backward on tensor cores: delta = rowsum(dO∘O) (attention_backward_dot), then dQ
    /// (attention_mma_backward_dq, blocks of 64 query rows) and dK, dV (attention_mma_backward_dkv, blocks of 64 keys).
    /// Throws when the device, type, width or layout does not fit.
    /// </summary>
    public static void BackwardTensorCore(IKernelDevice d, in AttentionArgs s, DevicePtr q, DevicePtr k, DevicePtr v, DevicePtr o, DevicePtr dout,
        DevicePtr lse, DevicePtr delta, DevicePtr dq, DevicePtr dk, DevicePtr dv, DType t)
    {
        if (!HasTensorCores(d.ComputeCapability, t))
            throw new NotSupportedException($"tensor-core attention needs bf16 on sm_80+ or fp16 on sm_75+ (got {t} on sm_{d.ComputeCapability})");
        var plan = TensorCoreBackwardTiling(s.HeadDim) ?? throw new NotSupportedException($"tensor-core attention takes head widths that are multiples of 8 up to {TensorCoreMaxWidth}, not {s.HeadDim}");
        if (!TensorCoreLayoutFits(s, q, k, v, o) || !TensorCoreLayoutFits(s, dq, dk, dv, dout))
            throw new NotSupportedException("tensor-core attention needs 16-byte aligned tensors whose strides are multiples of 8 elements");
        var (warps, _) = Tiling(s.HeadDim);
        d.Launch(KernelName("attention_backward_dot", t), new Dim3((uint)((s.QueryLength + warps - 1) / warps), (uint)s.Heads, (uint)s.Batch),
            new Dim3((uint)(32 * warps)), 0, new KernelArgs().Value(s).Ptr(o).Ptr(dout).Ptr(delta));
        int smemQ = plan.DqSharedBytes(s.HeadDim), smemK = plan.DkvSharedBytes(s.HeadDim);
        CheckShared(Math.Max(smemQ, smemK), s.HeadDim);
        d.Launch(KernelName($"attention_mma_backward_dq_d{plan.RegisterWidth}", t),
            new Dim3((uint)((s.QueryLength + TensorCoreQueryRows - 1) / TensorCoreQueryRows), (uint)s.Heads, (uint)s.Batch), new Dim3(128), smemQ,
            new KernelArgs().Value(s).Ptr(q).Ptr(k).Ptr(v).Ptr(dout).Ptr(lse).Ptr(delta).Ptr(dq));
        d.Launch(KernelName($"{plan.DkvKernel}_d{plan.RegisterWidth}", t),
            new Dim3((uint)((s.KeyLength + plan.DkvKeys - 1) / plan.DkvKeys), (uint)s.Heads, (uint)s.Batch), new Dim3((uint)plan.DkvThreads), smemK,
            new KernelArgs().Value(s).Ptr(q).Ptr(k).Ptr(v).Ptr(dout).Ptr(lse).Ptr(delta).Ptr(dk).Ptr(dv));
    }

    /// <summary>
    /// dq, dk, dv of the forward (FlashAttention-2 backward, no N×N buffer);
    /// <paramref name="delta"/> is a [B, H, Nq] fp32 scratch. dO/dQ/dK/dV share the strides of O/Q/K/V.
    /// </summary>
    public static void Backward(IKernelDevice d, in AttentionArgs s, DevicePtr q, DevicePtr k, DevicePtr v, DevicePtr o, DevicePtr dout,
        DevicePtr lse, DevicePtr delta, DevicePtr dq, DevicePtr dk, DevicePtr dv, DType t = DType.F32, bool warpPerRow = false)
    {
        var kernel = warpPerRow ? AttentionKernelFamily.WarpPerRow : ChooseBackward(d.ComputeCapability, s, t, q, k, v, o, dout, dq, dk, dv);
        Backward(d, s, q, k, v, o, dout, lse, delta, dq, dk, dv, t, kernel);
    }

    /// <summary>The backward by a chosen kernel family.</summary>
    public static void Backward(IKernelDevice d, in AttentionArgs s, DevicePtr q, DevicePtr k, DevicePtr v, DevicePtr o, DevicePtr dout,
        DevicePtr lse, DevicePtr delta, DevicePtr dq, DevicePtr dk, DevicePtr dv, DType t, AttentionKernelFamily kernel)
    {
        if (kernel == AttentionKernelFamily.TensorCore)
        {
            BackwardTensorCore(d, s, q, k, v, o, dout, lse, delta, dq, dk, dv, t);
            return;
        }
        int width = RowsWidth(s.HeadDim);
        if (width > 0 && kernel == AttentionKernelFamily.RowPerThread)
        {
            var rowsBlock = new Dim3(RowsBlock);
            var qRows = new Dim3((uint)((s.QueryLength + RowsBlock - 1) / RowsBlock), (uint)s.Heads, (uint)s.Batch);
            var kRows = new Dim3((uint)((s.KeyLength + RowsBlock - 1) / RowsBlock), (uint)s.Heads, (uint)s.Batch);
            int tileBytes = 2 * RowsTile * s.HeadDim * Staged;
            d.Launch(KernelName("attention_rows_backward_dot", t), qRows, rowsBlock, 0, new KernelArgs().Value(s).Ptr(o).Ptr(dout).Ptr(delta));
            d.Launch(KernelName($"attention_rows_backward_dq_d{width}", t), qRows, rowsBlock, tileBytes,
                new KernelArgs().Value(s).Ptr(q).Ptr(k).Ptr(v).Ptr(dout).Ptr(lse).Ptr(delta).Ptr(dq).I32(RowsTile));
            d.Launch(KernelName($"attention_rows_backward_dkv_d{width}", t), kRows, rowsBlock, tileBytes + 2 * RowsTile * Staged,
                new KernelArgs().Value(s).Ptr(q).Ptr(k).Ptr(v).Ptr(dout).Ptr(lse).Ptr(delta).Ptr(dk).Ptr(dv).I32(RowsTile));
            return;
        }
        var (warps, tile) = Tiling(s.HeadDim);
        var block = new Dim3((uint)(32 * warps));
        var qGrid = new Dim3((uint)((s.QueryLength + warps - 1) / warps), (uint)s.Heads, (uint)s.Batch);
        var kGrid = new Dim3((uint)((s.KeyLength + warps - 1) / warps), (uint)s.Heads, (uint)s.Batch);
        d.Launch(KernelName("attention_backward_dot", t), qGrid, block, 0, new KernelArgs().Value(s).Ptr(o).Ptr(dout).Ptr(delta));
        int smemQ = (2 * tile * s.HeadDim + 3 * warps * s.HeadDim) * Staged;
        CheckShared(smemQ, s.HeadDim);
        d.Launch(KernelName("attention_backward_dq", t), qGrid, block, smemQ,
            new KernelArgs().Value(s).Ptr(q).Ptr(k).Ptr(v).Ptr(dout).Ptr(lse).Ptr(delta).Ptr(dq).I32(tile));
        int smemK = (2 * tile * s.HeadDim + 2 * tile + 4 * warps * s.HeadDim) * Staged;
        CheckShared(smemK, s.HeadDim);
        d.Launch(KernelName("attention_backward_dkv", t), kGrid, block, smemK,
            new KernelArgs().Value(s).Ptr(q).Ptr(k).Ptr(v).Ptr(dout).Ptr(lse).Ptr(delta).Ptr(dk).Ptr(dv).I32(tile));
    }
}
