using System.Numerics;
using System.Numerics.Tensors;
using CudaDream.Engine.Backends;
using CudaDream.Engine.Backends.Cpu;
using CudaDream.Engine.Backends.Cpu.Kernels;
using CudaDream.Engine.Backends.Device;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Tensors;
using Tensor = CudaDream.Engine.Tensors.Tensor;

namespace CudaDream.Engine.Ops;

/// <summary>Elementwise ONNX ops on the CPU: unary math, broadcast binary arithmetic and comparisons, Where, Clip, Cast.</summary>
internal static class ElementwiseCpu
{
    public static Dictionary<string, CpuOpImpl> Table { get; } = Register();

    private static Dictionary<string, CpuOpImpl> Register()
    {
        var t = new Dictionary<string, CpuOpImpl>(StringComparer.Ordinal);
        t["Add"] = Binary<AddOp>;
        t["Sub"] = Binary<SubOp>;
        t["Mul"] = Binary<MulOp>;
        t["Div"] = Binary<DivOp>;
        t["Pow"] = Binary<PowOp>;
        t["Max"] = Binary<MaxOp>;
        t["Min"] = Binary<MinOp>;
        t["Mod"] = Binary<ModOp>;
        t["Equal"] = Compare<EqualOp>;
        t["Less"] = Compare<LessOp>;
        t["Greater"] = Compare<GreaterOp>;
        t["LessOrEqual"] = Compare<LessOrEqualOp>;
        t["GreaterOrEqual"] = Compare<GreaterOrEqualOp>;
        t["And"] = (n, i, o, c) => BroadcastKernels.Logic(i[0]!, i[1]!, o[0], (a, b) => a && b);
        t["Or"] = (n, i, o, c) => BroadcastKernels.Logic(i[0]!, i[1]!, o[0], (a, b) => a || b);
        t["Xor"] = (n, i, o, c) => BroadcastKernels.Logic(i[0]!, i[1]!, o[0], (a, b) => a ^ b);
        t["Not"] = (n, i, o, c) => { var s = i[0]!.Data.Span; var d = o[0].Data.Span; for (int k = 0; k < s.Length; k++) d[k] = s[k] == 0 ? (byte)1 : (byte)0; };
        t["Where"] = (n, i, o, c) => BroadcastKernels.Where(i[0]!, i[1]!, i[2]!, o[0]);
        t["Cast"] = (n, i, o, c) => i[0]!.To(o[0].DType).Data.Span.CopyTo(o[0].Data.Span);
        t["CastLike"] = t["Cast"];
        t["Identity"] = Copy;
        t["Dropout"] = (n, i, o, c) => { Copy(n, i, o, c); for (int k = 1; k < o.Length; k++) o[k].Data.Span.Fill(1); };
        t["Clip"] = Clip;
        foreach (var op in new[] { "Sigmoid", "Erf", "Sqrt", "Exp", "Log", "Sin", "Cos", "Neg", "Abs", "Tanh", "Relu", "Reciprocal", "Floor", "Ceil" })
            t[op] = Unary;
        return t;
    }

    public static void Copy(Node n, Tensor?[] i, Tensor[] o, CpuContext c) => i[0]!.Data.Span.CopyTo(o[0].Data.Span);

    private static void Binary<TOp>(Node n, Tensor?[] i, Tensor[] o, CpuContext c) where TOp : IBinaryOp
    {
        if (i.Length != 2) throw new GraphException(n, $"{n.Op} with {i.Length} inputs is not supported (2 expected)");
        var a = i[0]!; var b = i[1]!;
        if (a.DType != b.DType) throw new GraphException(n, $"operand types differ: {a.DType} and {b.DType}");
        Dispatch.Numeric(n, a.DType, new BinaryAction<TOp>(a, b, o[0]));
    }

    private readonly record struct BinaryAction<TOp>(Tensor A, Tensor B, Tensor Y) : INumericAction where TOp : IBinaryOp
    {
        public void Run<T>() where T : unmanaged, INumber<T> => BroadcastKernels.Binary<T, TOp>(A, B, Y);
    }

    private static void Compare<TOp>(Node n, Tensor?[] i, Tensor[] o, CpuContext c) where TOp : ICompareOp
    {
        var a = i[0]!; var b = i[1]!;
        if (a.DType == DType.Bool && b.DType == DType.Bool)
        {
            Dispatch.Numeric(n, DType.U8, new CompareAction<TOp>(a, b, o[0]));
            return;
        }
        if (a.DType != b.DType) throw new GraphException(n, $"operand types differ: {a.DType} and {b.DType}");
        Dispatch.Numeric(n, a.DType, new CompareAction<TOp>(a, b, o[0]));
    }

    private readonly record struct CompareAction<TOp>(Tensor A, Tensor B, Tensor Y) : INumericAction where TOp : ICompareOp
    {
        public void Run<T>() where T : unmanaged, INumber<T> => BroadcastKernels.Compare<T, TOp>(A, B, Y);
    }

    private static void Clip(Node n, Tensor?[] i, Tensor[] o, CpuContext c) => Dispatch.Numeric(n, i[0]!.DType, new ClipAction(n, i, o[0]));

    private readonly record struct ClipAction(Node N, Tensor?[] I, Tensor Y) : INumericAction
    {
        public void Run<T>() where T : unmanaged, INumber<T>
        {
            // Opset ≥ 11 passes min/max as inputs; older opsets as attributes.
            T lo = I.Length > 1 && I[1] != null ? I[1]!.ReadOnlySpan<T>()[0] : T.CreateSaturating(N.Attributes.Float("min", float.MinValue));
            T hi = I.Length > 2 && I[2] != null ? I[2]!.ReadOnlySpan<T>()[0] : T.CreateSaturating(N.Attributes.Float("max", float.MaxValue));
            var x = I[0]!.ReadOnlySpan<T>(); var y = Y.Span<T>();
            for (int k = 0; k < x.Length; k++) y[k] = x[k] < lo ? lo : x[k] > hi ? hi : x[k];
        }
    }

    private static void Unary(Node n, Tensor?[] i, Tensor[] o, CpuContext c)
    {
        var x = i[0]!;
        if (x.DType is DType.F32 or DType.F64) Dispatch.Float(n, x.DType, new UnaryFloat(n.Op, x, o[0], c.UseFastKernels));
        else Dispatch.Numeric(n, x.DType, new UnaryInteger(n, x, o[0]));
    }

    private readonly record struct UnaryFloat(string Op, Tensor X, Tensor Y, bool Fast) : IFloatAction
    {
        public void Run<T>() where T : unmanaged, IFloatingPointIeee754<T>
        {
            var x = X.ReadOnlySpan<T>();
            var y = Y.Span<T>();
            if (Fast && typeof(T) == typeof(float) && TryVectorised(Op, X.ReadOnlySpan<float>(), Y.Span<float>())) return;
            switch (Op)
            {
                case "Sigmoid": for (int k = 0; k < x.Length; k++) y[k] = T.One / (T.One + T.Exp(-x[k])); break;
                case "Erf": for (int k = 0; k < x.Length; k++) y[k] = SpecialFunctions.Erf(x[k]); break;
                case "Sqrt": for (int k = 0; k < x.Length; k++) y[k] = T.Sqrt(x[k]); break;
                case "Exp": for (int k = 0; k < x.Length; k++) y[k] = T.Exp(x[k]); break;
                case "Log": for (int k = 0; k < x.Length; k++) y[k] = T.Log(x[k]); break;
                case "Sin": for (int k = 0; k < x.Length; k++) y[k] = T.Sin(x[k]); break;
                case "Cos": for (int k = 0; k < x.Length; k++) y[k] = T.Cos(x[k]); break;
                case "Neg": for (int k = 0; k < x.Length; k++) y[k] = -x[k]; break;
                case "Abs": for (int k = 0; k < x.Length; k++) y[k] = T.Abs(x[k]); break;
                case "Tanh": for (int k = 0; k < x.Length; k++) y[k] = T.Tanh(x[k]); break;
                case "Relu": for (int k = 0; k < x.Length; k++) y[k] = x[k] > T.Zero ? x[k] : T.Zero; break;
                case "Reciprocal": for (int k = 0; k < x.Length; k++) y[k] = T.One / x[k]; break;
                case "Floor": for (int k = 0; k < x.Length; k++) y[k] = T.Floor(x[k]); break;
                case "Ceil": for (int k = 0; k < x.Length; k++) y[k] = T.Ceiling(x[k]); break;
                default: throw new InvalidOperationException(Op);
            }
        }

        private static bool TryVectorised(string op, ReadOnlySpan<float> x, Span<float> y)
        {
            switch (op)
            {
                case "Sigmoid": TensorPrimitives.Sigmoid(x, y); return true;
                case "Exp": TensorPrimitives.Exp(x, y); return true;
                case "Tanh": TensorPrimitives.Tanh(x, y); return true;
                case "Neg": TensorPrimitives.Negate(x, y); return true;
                case "Abs": TensorPrimitives.Abs(x, y); return true;
                case "Sqrt": TensorPrimitives.Sqrt(x, y); return true;
                default: return false;
            }
        }
    }

    private readonly record struct UnaryInteger(Node N, Tensor X, Tensor Y) : INumericAction
    {
        public void Run<T>() where T : unmanaged, INumber<T>
        {
            var x = X.ReadOnlySpan<T>(); var y = Y.Span<T>();
            switch (N.Op)
            {
                case "Neg": for (int k = 0; k < x.Length; k++) y[k] = -x[k]; break;
                case "Abs": for (int k = 0; k < x.Length; k++) y[k] = T.Abs(x[k]); break;
                case "Relu": for (int k = 0; k < x.Length; k++) y[k] = x[k] > T.Zero ? x[k] : T.Zero; break;
                default: throw new GraphException(N, $"{N.Op} on {X.DType} is not supported");
            }
        }
    }
}
