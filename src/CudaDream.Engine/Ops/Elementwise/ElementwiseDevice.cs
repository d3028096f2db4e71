using CudaDream.Engine.Backends;
using CudaDream.Engine.Backends.Cpu;
using CudaDream.Engine.Backends.Device;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Tensors;

namespace CudaDream.Engine.Ops;

/// <summary>Elementwise ONNX ops on kernel devices: unary math, broadcast arithmetic and comparisons, logic, Where, Clip, Cast.</summary>
internal static class ElementwiseDevice
{
    private static readonly Dictionary<string, BinaryOp> Arithmetic = new()
    {
        ["Add"] = BinaryOp.Add, ["Sub"] = BinaryOp.Sub, ["Mul"] = BinaryOp.Mul, ["Div"] = BinaryOp.Div, ["Pow"] = BinaryOp.Pow,
        ["Max"] = BinaryOp.Max, ["Min"] = BinaryOp.Min, ["Mod"] = BinaryOp.Mod,
    };

    private static readonly Dictionary<string, BinaryOp> Logic = new() { ["And"] = BinaryOp.And, ["Or"] = BinaryOp.Or, ["Xor"] = BinaryOp.Xor };

    private static readonly Dictionary<string, CompareOp> Comparisons = new()
    {
        ["Equal"] = CompareOp.Equal, ["Less"] = CompareOp.Less, ["Greater"] = CompareOp.Greater,
        ["LessOrEqual"] = CompareOp.LessOrEqual, ["GreaterOrEqual"] = CompareOp.GreaterOrEqual,
    };

    /// <summary>ONNX unary ops: the activation kernel for the activations, the elementwise kernel otherwise.</summary>
    private static readonly Dictionary<string, (UnaryOp Op, bool Activation)> Unaries = new()
    {
        ["Sigmoid"] = (UnaryOp.Sigmoid, true), ["Tanh"] = (UnaryOp.Tanh, true), ["Relu"] = (UnaryOp.Relu, true),
        ["Erf"] = (UnaryOp.Erf, false), ["Sqrt"] = (UnaryOp.Sqrt, false), ["Exp"] = (UnaryOp.Exp, false), ["Log"] = (UnaryOp.Log, false),
        ["Sin"] = (UnaryOp.Sin, false), ["Cos"] = (UnaryOp.Cos, false), ["Neg"] = (UnaryOp.Neg, false), ["Abs"] = (UnaryOp.Abs, false),
        ["Reciprocal"] = (UnaryOp.Reciprocal, false), ["Floor"] = (UnaryOp.Floor, false), ["Ceil"] = (UnaryOp.Ceil, false),
    };

    public static Dictionary<string, DeviceOpCompiler> Table { get; } = Register();

    private static Dictionary<string, DeviceOpCompiler> Register()
    {
        var t = new Dictionary<string, DeviceOpCompiler>(StringComparer.Ordinal);
        foreach (var (name, op) in Arithmetic) t[name] = s => Binary(s, op);
        foreach (var (name, op) in Logic) t[name] = s => Binary(s, op);
        foreach (var (name, op) in Comparisons) t[name] = s => Compare(s, op);
        foreach (var name in Unaries.Keys) t[name] = Unary;
        t["Not"] = s =>
        {
            var (x, y, n) = (s.In(0), s.Out(), s.OutCount());
            return () => ElementwiseKernels.LogicalNot(s.Device, x.Ptr, y.Ptr, n);
        };
        t["Where"] = Where;
        t["Cast"] = Cast;
        t["CastLike"] = Cast;
        t["Identity"] = CopyInput;
        t["Dropout"] = Dropout;
        t["Clip"] = Clip;
        return t;
    }

    /// <summary>Output 0 = input 0, byte for byte (a view op the planner could not alias, Identity, inference Dropout).</summary>
    internal static Action CopyInput(DeviceStepBuilder s)
    {
        var (x, y, bytes) = (s.In(0), s.Out(), ExecutionPlan.ByteSize(s.Node.Outputs[0]));
        return () => { if (bytes > 0) s.Device.CopyDeviceToDevice(y.Ptr, x.Ptr, bytes); };
    }

    private static Action Dropout(DeviceStepBuilder s)
    {
        var copy = CopyInput(s);
        if (!s.IsUsed(1)) return copy;
        var (mask, n) = (s.Out(1), s.OutCount(1));
        return () =>
        {
            copy();
            KernelLaunchers.FillPattern(s.Device, mask.Ptr, n, new byte[] { 1 });
        };
    }

    private static Action Unary(DeviceStepBuilder s)
    {
        var (op, activation) = Unaries[s.Node.Op];
        var (x, y, n, type) = (s.In(0), s.Out(), s.OutCount(), s.InType(0));
        if (type is DType.I32 or DType.I64) return () => ElementwiseKernels.UnaryInteger(s.Device, op, x.Ptr, y.Ptr, n, type);
        s.RequireFloat();
        if (activation) return () => ActivationKernels.Forward(s.Device, op, x.Ptr, y.Ptr, n, type);
        return () => ElementwiseKernels.Unary(s.Device, op, x.Ptr, y.Ptr, n, 0, type);
    }

    private static Action Binary(DeviceStepBuilder s, BinaryOp op)
    {
        if (s.Node.Inputs.Count != 2) throw new GraphException(s.Node, $"{s.Node.Op} with {s.Node.Inputs.Count} inputs is not supported (2 expected)");
        var (a, b, y) = (s.In(0), s.In(1), s.Out());
        var (aShape, bShape, type) = (s.InShape(0), s.InShape(1), s.InType(0));
        if (s.InType(1) != type) throw new GraphException(s.Node, $"operand types differ: {type} and {s.InType(1)}");
        bool logic = op is BinaryOp.And or BinaryOp.Or or BinaryOp.Xor;
        if (logic ? type != DType.Bool : type is DType.Bool)
            throw new NotSupportedException($"{s.Node.Op} on {type}");
        if (type.IsFloat()) return () => ElementwiseKernels.Binary(s.Device, op, a.Ptr, aShape, b.Ptr, bShape, y.Ptr, type);
        return () => ElementwiseKernels.BinaryInteger(s.Device, op, a.Ptr, aShape, b.Ptr, bShape, y.Ptr, type);
    }

    private static Action Compare(DeviceStepBuilder s, CompareOp op)
    {
        var (a, b, y) = (s.In(0), s.In(1), s.Out());
        var (aShape, bShape, type) = (s.InShape(0), s.InShape(1), s.InType(0));
        if (s.InType(1) != type) throw new GraphException(s.Node, $"operand types differ: {type} and {s.InType(1)}");
        return () => ElementwiseKernels.Compare(s.Device, op, a.Ptr, aShape, b.Ptr, bShape, y.Ptr, type);
    }

    private static Action Where(DeviceStepBuilder s)
    {
        var (c, a, b, y) = (s.In(0), s.In(1), s.In(2), s.Out());
        var (cShape, aShape, bShape, width) = (s.InShape(0), s.InShape(1), s.InShape(2), s.OutType().Size());
        return () => ElementwiseKernels.Where(s.Device, c.Ptr, cShape, a.Ptr, aShape, b.Ptr, bShape, y.Ptr, width);
    }

    private static Action Cast(DeviceStepBuilder s)
    {
        var (from, to) = (s.InType(0), s.OutType());
        // Same bits (or bool read as u8): a copy.
        if (from == to || (from == DType.Bool && to == DType.U8)) return CopyInput(s);
        if (!ElementwiseKernels.CanCast(from, to)) throw new NotSupportedException($"Cast from {from} to {to}");
        var (x, y, n) = (s.In(0), s.Out(), s.OutCount());
        return () => ElementwiseKernels.Cast(s.Device, x.Ptr, from, y.Ptr, to, n);
    }

    /// <summary>Clip as a lower then an upper clamp; bounds are inputs (opset ≥ 11) or attributes, read on the host.</summary>
    private static Action Clip(DeviceStepBuilder s)
    {
        s.RequireFloat();
        float? lo = s.HasInput(1) ? s.HostConstant(1).ToFloat32Array()[0] : s.Node.Attributes.Has("min") ? s.Node.Attributes.Float("min", 0) : null;
        float? hi = s.HasInput(2) ? s.HostConstant(2).ToFloat32Array()[0] : s.Node.Attributes.Has("max") ? s.Node.Attributes.Float("max", 0) : null;
        var copy = CopyInput(s);
        var (x, y, n, t) = (s.In(0), s.Out(), s.OutCount(), s.InType(0));
        return () =>
        {
            var src = x;
            if (lo is { } l) { ElementwiseKernels.Unary(s.Device, UnaryOp.ClampMin, src.Ptr, y.Ptr, n, l, t); src = y; }
            if (hi is { } h) { ElementwiseKernels.Unary(s.Device, UnaryOp.ClampMax, src.Ptr, y.Ptr, n, h, t); src = y; }
            if (lo == null && hi == null) copy();
        };
    }
}
