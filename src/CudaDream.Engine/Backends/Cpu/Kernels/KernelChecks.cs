namespace CudaDream.Engine.Backends.Cpu.Kernels;

/// <summary>
/// Argument checks shared by the kernels. The fast kernels index through raw pointers, so every span
/// length is checked against the extent the shapes imply before any pointer arithmetic happens.
/// </summary>
internal static class KernelChecks
{
    public static void Positive(int value, string name)
    {
        if (value <= 0) throw new ArgumentOutOfRangeException(name, value, $"{name} must be positive");
    }

    public static void NonNegative(int value, string name)
    {
        if (value < 0) throw new ArgumentOutOfRangeException(name, value, $"{name} must not be negative");
    }

    /// <summary>The span holds at least <paramref name="needed"/> elements.</summary>
    public static void Length(int actual, long needed, string name)
    {
        if (actual < needed) throw new ArgumentException($"{name} has {actual} elements, the shapes need {needed}", name);
    }

    /// <summary>Exactly <paramref name="needed"/> elements (dense tensors of a known shape).</summary>
    public static void Exact(int actual, long needed, string name)
    {
        if (actual != needed) throw new ArgumentException($"{name} has {actual} elements, the shapes need exactly {needed}", name);
    }

    /// <summary>Empty (meaning "absent") or exactly <paramref name="needed"/> elements.</summary>
    public static void Optional(int actual, long needed, string name)
    {
        if (actual != 0 && actual != needed) throw new ArgumentException($"{name} has {actual} elements: pass an empty span (absent) or exactly {needed}", name);
    }

    /// <summary>Elements spanned by a row-major matrix of rows×cols with leading dimension ld.</summary>
    public static long MatrixExtent(int rows, int cols, int ld) => rows == 0 || cols == 0 ? 0 : (long)(rows - 1) * ld + cols;
}
