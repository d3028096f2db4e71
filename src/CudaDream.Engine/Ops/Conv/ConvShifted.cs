using System.Buffers;
using CudaDream.Engine.Backends.Cpu.Kernels;

namespace CudaDream.Engine.Ops;

/// <summary>
/// A stride-1, ungrouped convolution as one GEMM over shifted rows of a padded image, for planes small enough that
/// im2col (copying every input pixel kh·kw times) costs as much as the product — on the tiny UNet's 4×4 to 16×16
/// planes it took 35–60 % of <see cref="ConvFast"/>'s time. The input is copied once into zero-padded planes whose
/// rows are Wp wide; in those coordinates output pixel q = oh·Wp + ow reads input q + i·dh·Wp + j·dw for kernel
/// tap (i, j), so the im2col matrix's row (c, i, j) is channel c's plane shifted by the tap, and y = W·B is one
/// <see cref="GemmUnpacked"/> product with B's rows given by a table of offsets (W read in place). The Wp − Wo extra
/// columns of every output row are computed and dropped. The backward-data pass is the same construction on the
/// adjoint, a full correlation with the flipped kernel: dy goes into zero-padded planes (Wq wide, shifted by
/// (kh−1)·dh − padTop rows and (kw−1)·dw − padLeft columns) and dx = Wᵀ·B' where B' row (o, i, j) is dy's plane o
/// shifted by the flipped tap, and Wᵀ's column (o, i, j) is read in place through a second table.
/// Row widths are rounded up so that Ho·Wp (H·Wq) is a multiple of 8 (whole vectors); each plane has slack past
/// its last row, so a shifted row never runs into the next plane.
/// </summary>
internal static unsafe class ConvShifted
{
    private static bool Candidate(in Conv2dGeometry g) => g.StrideH == 1 && g.StrideW == 1 && g.Groups == 1 && g.KernelH * g.KernelW > 1;

    /// <summary>Stride 1, one group, a kernel larger than 1×1, and B (the padded input) small enough for <see cref="GemmUnpacked"/>.</summary>
    public static bool SuitsForward(in Conv2dGeometry g) => Candidate(g) && GemmUnpacked.Suits(Layout.Forward(g).Columns, g.InChannels);

    /// <summary>As <see cref="SuitsForward"/>, for the padded dy; the pads may not exceed the kernel's reach (they never do in a UNet).</summary>
    public static bool SuitsBackward(in Conv2dGeometry g) =>
        Candidate(g) && g.PadTop <= g.DilationH * (g.KernelH - 1) && g.PadLeft <= g.DilationW * (g.KernelW - 1)
        && GemmUnpacked.Suits(Layout.Backward(g).Columns, g.OutChannels);

    /// <summary>Padded planes: Rows rows of Width floats, planes Plane floats apart (slack included); Columns = product columns.</summary>
    private readonly record struct Layout(int Width, int Rows, int Plane, int Columns)
    {
        /// <summary>The padded input: Hp = H + pads rows, Wp ≥ W + pads; the product has Ho rows of Wp.</summary>
        public static Layout Forward(in Conv2dGeometry g) =>
            Make(g.Width + g.PadLeft + g.PadRight, g.Height + g.PadTop + g.PadBottom, g.OutHeight, g.DilationW * (g.KernelW - 1));

        /// <summary>The padded dy: H + (kh−1)·dh rows, Wq ≥ W + (kw−1)·dw; the product has H rows of Wq.</summary>
        public static Layout Backward(in Conv2dGeometry g) =>
            Make(g.Width + g.DilationW * (g.KernelW - 1), g.Height + g.DilationH * (g.KernelH - 1), g.Height, g.DilationW * (g.KernelW - 1));

        private static Layout Make(int width, int rows, int productRows, int reach)
        {
            while ((long)productRows * width % 8 != 0) width++;
            int slack = (reach + 8) & ~7;
            return new Layout(width, rows, checked(width * rows + slack), checked(productRows * width));
        }
    }

    /// <summary>y = conv(x, w) + bias (bias null = none) for every sample; overwrites y.</summary>
    public static void Forward(in Conv2dGeometry g, float* x, float* w, float* bias, float* y, int degree)
    {
        var l = Layout.Forward(g);
        int cin = g.InChannels, cout = g.OutChannels, taps = g.KernelH * g.KernelW, depth = cin * taps;
        float[] padded = ArrayPool<float>.Shared.Rent(checked(cin * l.Plane));
        float[] output = ArrayPool<float>.Shared.Rent(checked(cout * l.Columns));
        long[] tables = ArrayPool<long>.Shared.Rent(2 * depth);
        try
        {
            for (int c = 0; c < cin; c++)
                for (int i = 0; i < g.KernelH; i++)
                    for (int j = 0; j < g.KernelW; j++)
                    {
                        int p = (c * g.KernelH + i) * g.KernelW + j;
                        tables[p] = p; // W [Cout, Cin·kh·kw] is row-major: column p at p
                        tables[depth + p] = (long)c * l.Plane + (long)i * g.DilationH * l.Width + j * g.DilationW;
                    }
            fixed (float* xp = padded, yp = output)
            fixed (long* t = tables)
                for (int n = 0; n < g.Batch; n++)
                {
                    PadInput(g, l, x + (long)n * cin * g.Height * g.Width, xp);
                    GemmUnpacked.Multiply(cout, l.Columns, depth, w, depth, t, xp, t + depth, yp, l.Columns, accumulate: false, degree);
                    CropOutput(g, l, yp, bias, y + (long)n * cout * g.OutHeight * g.OutWidth);
                }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(padded);
            ArrayPool<float>.Shared.Return(output);
            ArrayPool<long>.Shared.Return(tables);
        }
    }

    /// <summary>
    /// dx = convᵀ(dy, w) for every sample; overwrites dx. dx[c, h, w] = Σ_(o,i,j) W[o, c, i, j] · dy_pad[o, h + (kh−1−i)·dh,
    /// w + (kw−1−j)·dw] with dy_pad[o, r, s] = dy[o, r − (kh−1)·dh + padTop, s − (kw−1)·dw + padLeft].
    /// </summary>
    public static void BackwardData(in Conv2dGeometry g, float* dy, float* w, float* dx, int degree)
    {
        var l = Layout.Backward(g);
        int cin = g.InChannels, cout = g.OutChannels, taps = g.KernelH * g.KernelW, depth = cout * taps;
        float[] padded = ArrayPool<float>.Shared.Rent(checked(cout * l.Plane));
        float[] output = ArrayPool<float>.Shared.Rent(checked(cin * l.Columns));
        long[] tables = ArrayPool<long>.Shared.Rent(2 * depth);
        try
        {
            for (int o = 0; o < cout; o++)
                for (int i = 0; i < g.KernelH; i++)
                    for (int j = 0; j < g.KernelW; j++)
                    {
                        int p = (o * g.KernelH + i) * g.KernelW + j;
                        tables[p] = (long)o * cin * taps + i * g.KernelW + j; // W[o, c, i, j] = w[c·taps + this]
                        tables[depth + p] = (long)o * l.Plane + (long)(g.KernelH - 1 - i) * g.DilationH * l.Width + (g.KernelW - 1 - j) * g.DilationW;
                    }
            fixed (float* dyp = padded, dxp = output)
            fixed (long* t = tables)
                for (int n = 0; n < g.Batch; n++)
                {
                    PadGradient(g, l, dy + (long)n * cout * g.OutHeight * g.OutWidth, dyp);
                    GemmUnpacked.Multiply(cin, l.Columns, depth, w, taps, t, dyp, t + depth, dxp, l.Columns, accumulate: false, degree);
                    CropInput(g, l, dxp, dx + (long)n * cin * g.Height * g.Width);
                }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(padded);
            ArrayPool<float>.Shared.Return(output);
            ArrayPool<long>.Shared.Return(tables);
        }
    }

    /// <summary>x (one sample) into the zero-padded planes.</summary>
    private static void PadInput(in Conv2dGeometry g, in Layout l, float* x, float* padded)
    {
        new Span<float>(padded, g.InChannels * l.Plane).Clear();
        for (int c = 0; c < g.InChannels; c++)
            for (int h = 0; h < g.Height; h++)
                new ReadOnlySpan<float>(x + ((long)c * g.Height + h) * g.Width, g.Width)
                    .CopyTo(new Span<float>(padded + (long)c * l.Plane + (long)(h + g.PadTop) * l.Width + g.PadLeft, g.Width));
    }

    /// <summary>y[o, oh, ow] = y_pad[o, oh·Wp + ow] + bias[o].</summary>
    private static void CropOutput(in Conv2dGeometry g, in Layout l, float* padded, float* bias, float* y)
    {
        int ho = g.OutHeight, wo = g.OutWidth;
        for (int o = 0; o < g.OutChannels; o++)
            for (int oh = 0; oh < ho; oh++)
            {
                var src = new ReadOnlySpan<float>(padded + (long)o * l.Columns + (long)oh * l.Width, wo);
                var dst = new Span<float>(y + ((long)o * ho + oh) * wo, wo);
                if (bias != null) System.Numerics.Tensors.TensorPrimitives.Add(src, bias[o], dst);
                else src.CopyTo(dst);
            }
    }

    /// <summary>dy (one sample) into zero-padded planes, shifted by (kh−1)·dh − padTop rows and (kw−1)·dw − padLeft columns.</summary>
    private static void PadGradient(in Conv2dGeometry g, in Layout l, float* dy, float* padded)
    {
        int ho = g.OutHeight, wo = g.OutWidth;
        int top = g.DilationH * (g.KernelH - 1) - g.PadTop, left = g.DilationW * (g.KernelW - 1) - g.PadLeft;
        int rows = Math.Min(ho, l.Rows - top), cols = Math.Min(wo, l.Width - left); // past them nothing is read
        new Span<float>(padded, g.OutChannels * l.Plane).Clear();
        for (int o = 0; o < g.OutChannels; o++)
            for (int oh = 0; oh < rows; oh++)
                new ReadOnlySpan<float>(dy + ((long)o * ho + oh) * wo, cols)
                    .CopyTo(new Span<float>(padded + (long)o * l.Plane + (long)(oh + top) * l.Width + left, cols));
    }

    /// <summary>dx[c, h, w] = dx_pad[c, h·Wq + w].</summary>
    private static void CropInput(in Conv2dGeometry g, in Layout l, float* padded, float* dx)
    {
        for (int c = 0; c < g.InChannels; c++)
            for (int h = 0; h < g.Height; h++)
                new ReadOnlySpan<float>(padded + (long)c * l.Columns + (long)h * l.Width, g.Width)
                    .CopyTo(new Span<float>(dx + ((long)c * g.Height + h) * g.Width, g.Width));
    }
}
