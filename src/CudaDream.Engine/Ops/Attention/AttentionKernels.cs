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
    /// o = softmax(scale·q·kᵀ)·v per (batch, head), lse [B, H, Nq] saved for the backward. Heads up to 32
    /// wide run the row-per-thread kernels unless <paramref name="warpPerRow"/> forces the warp kernels.
    /// </summary>
    public static void Forward(IKernelDevice d, in AttentionArgs s, DevicePtr q, DevicePtr k, DevicePtr v, DevicePtr o, DevicePtr lse, DType t = DType.F32, bool warpPerRow = false)
    {
        int width = RowsWidth(s.HeadDim);
        if (width > 0 && !warpPerRow)
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

    /// <summary>
    /// dq, dk, dv of <see cref="Forward"/> (FlashAttention-2 backward, no N×N buffer);
    /// <paramref name="delta"/> is a [B, H, Nq] fp32 scratch. dO/dQ/dK/dV share the strides of O/Q/K/V.
    /// </summary>
    public static void Backward(IKernelDevice d, in AttentionArgs s, DevicePtr q, DevicePtr k, DevicePtr v, DevicePtr o, DevicePtr dout,
        DevicePtr lse, DevicePtr delta, DevicePtr dq, DevicePtr dk, DevicePtr dv, DType t = DType.F32, bool warpPerRow = false)
    {
        int width = RowsWidth(s.HeadDim);
        if (width > 0 && !warpPerRow)
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
