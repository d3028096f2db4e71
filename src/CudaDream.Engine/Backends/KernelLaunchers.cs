using CudaDream.Engine.Tensors;

namespace CudaDream.Engine.Backends;

/// <summary>
/// What every kernel launcher shares: launch geometry, kernel names by element type, broadcast strides, and the
/// one kernel the device executor itself needs (filling memory with an element pattern, for splat constants).
/// The launchers of each op live in its home (Engine/Ops/&lt;Op&gt;/&lt;Op&gt;Kernels), written once against
/// <see cref="IKernelDevice"/> so cuda and emu run identical host code, each following the launch contract in the
/// header comment of its kernel file. Pointers are device addresses; shapes are element counts.
/// </summary>
public static class KernelLaunchers
{
    internal const int Threads = 256;
    internal static readonly Dim3 Block256 = new(Threads);

    internal static Dim3 Grid1D(long n) => new((uint)Math.Clamp((n + Threads - 1) / Threads, 1, 4096));

    /// <summary>
    /// Block for a kernel that reduces one row per block: the row length rounded up to whole warps, at
    /// most 256, so short rows (LayerNorm over 32 channels, softmax over 77 keys) leave no thread idle.
    /// </summary>
    internal static Dim3 RowBlock(long rowLength) => new((uint)Math.Clamp((rowLength + 31) / 32 * 32, 32, Threads));

    private static string Suffix(DType t) => t switch
    {
        DType.F32 => "f32",
        DType.BF16 => "bf16",
        DType.F16 => "f16",
        _ => throw new NotSupportedException($"no float kernels are instantiated for {t}"),
    };

    /// <summary>The exported name of kernel <paramref name="stem"/> instantiated for element type <paramref name="t"/> ("attention_forward_f32").</summary>
    public static string KernelName(string stem, DType t) => stem + "_" + Suffix(t);

    /// <summary>Element strides of <paramref name="shape"/> broadcast to <paramref name="outShape"/> (0 along broadcast dimensions).</summary>
    internal static long[] BroadcastStrides(int[] shape, int[] outShape)
    {
        var own = Shapes.Strides(shape);
        var r = new long[outShape.Length];
        int off = outShape.Length - shape.Length;
        for (int i = 0; i < shape.Length; i++) r[off + i] = shape[i] == 1 ? 0 : own[i];
        return r;
    }

    /// <summary>dst[0..n) = the element whose bytes are <paramref name="value"/> (1, 2, 4 or 8 of them).</summary>
    public static void FillPattern(IKernelDevice d, DevicePtr dst, long n, ReadOnlySpan<byte> value)
    {
        if (n == 0) return;
        var args = new KernelArgs().Ptr(dst).I64(n);
        switch (value.Length)
        {
            case 1: args.Value(value[0]); break;
            case 2: args.Value(BitConverter.ToUInt16(value)); break;
            case 4: args.Value(BitConverter.ToUInt32(value)); break;
            case 8: args.Value(BitConverter.ToUInt64(value)); break;
            default: throw new ArgumentException($"no fill for {value.Length}-byte elements");
        }
        d.Launch("fill_pattern_" + WidthSuffix(value.Length), Grid1D(n), Block256, 0, args);
    }

    internal static string WidthSuffix(int bytes) => bytes is 1 or 2 or 4 or 8 ? bytes.ToString() : throw new NotSupportedException($"{bytes}-byte elements");

    internal static string IntegerSuffix(DType t) => t switch
    {
        DType.I32 => "i32",
        DType.I64 => "i64",
        DType.U8 or DType.Bool => "u8",
        _ => throw new NotSupportedException($"integer kernels for {t} are not instantiated"),
    };
}
