using CudaDream.Engine.Backends.Cpu.Kernels;

namespace CudaDream.Engine.Ops;

/// <summary>
/// Shapes of a 2-D convolution in NCHW: x [N, Cin, H, W], w [Cout, Cin/groups, kh, kw], y [N, Cout, Ho, Wo],
/// with Ho = floor((H + padTop + padBottom − dilationH·(kh−1) − 1) / strideH) + 1 (Wo likewise), the
/// ONNX Conv / torch.nn.Conv2d definition. Pads are zero padding and may differ per side.
/// </summary>
public readonly record struct Conv2dGeometry(
    int Batch, int InChannels, int Height, int Width,
    int OutChannels, int KernelH, int KernelW,
    int StrideH = 1, int StrideW = 1,
    int PadTop = 0, int PadLeft = 0, int PadBottom = 0, int PadRight = 0,
    int DilationH = 1, int DilationW = 1,
    int Groups = 1)
{
    public int OutHeight => (Height + PadTop + PadBottom - DilationH * (KernelH - 1) - 1) / StrideH + 1;
    public int OutWidth => (Width + PadLeft + PadRight - DilationW * (KernelW - 1) - 1) / StrideW + 1;
    public int InChannelsPerGroup => InChannels / Groups;
    public int OutChannelsPerGroup => OutChannels / Groups;

    public long InputLength => (long)Batch * InChannels * Height * Width;
    public long WeightLength => (long)OutChannels * InChannelsPerGroup * KernelH * KernelW;
    public long OutputLength => (long)Batch * OutChannels * OutHeight * OutWidth;

    /// <summary>True when the convolution is a plain per-pixel matrix product (1×1, stride 1, no padding).</summary>
    public bool IsPointwise => KernelH == 1 && KernelW == 1 && StrideH == 1 && StrideW == 1
        && PadTop == 0 && PadLeft == 0 && PadBottom == 0 && PadRight == 0;

    public void Validate()
    {
        KernelChecks.Positive(Batch, nameof(Batch));
        KernelChecks.Positive(InChannels, nameof(InChannels));
        KernelChecks.Positive(Height, nameof(Height));
        KernelChecks.Positive(Width, nameof(Width));
        KernelChecks.Positive(OutChannels, nameof(OutChannels));
        KernelChecks.Positive(KernelH, nameof(KernelH));
        KernelChecks.Positive(KernelW, nameof(KernelW));
        KernelChecks.Positive(StrideH, nameof(StrideH));
        KernelChecks.Positive(StrideW, nameof(StrideW));
        KernelChecks.Positive(DilationH, nameof(DilationH));
        KernelChecks.Positive(DilationW, nameof(DilationW));
        KernelChecks.Positive(Groups, nameof(Groups));
        KernelChecks.NonNegative(PadTop, nameof(PadTop));
        KernelChecks.NonNegative(PadLeft, nameof(PadLeft));
        KernelChecks.NonNegative(PadBottom, nameof(PadBottom));
        KernelChecks.NonNegative(PadRight, nameof(PadRight));
        if (InChannels % Groups != 0 || OutChannels % Groups != 0)
            throw new ArgumentException($"channels {InChannels}→{OutChannels} are not divisible by {Groups} groups");
        if (Height + PadTop + PadBottom < DilationH * (KernelH - 1) + 1 || Width + PadLeft + PadRight < DilationW * (KernelW - 1) + 1)
            throw new ArgumentException($"the {KernelH}×{KernelW} kernel (dilation {DilationH}×{DilationW}) does not fit the padded {Height}×{Width} input");
        if (InputLength > int.MaxValue || WeightLength > int.MaxValue || OutputLength > int.MaxValue)
            throw new ArgumentException("convolution tensors over 2^31 elements are not supported");
    }
}
