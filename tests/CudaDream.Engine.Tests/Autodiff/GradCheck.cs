using CudaDream.Engine.Autodiff;
using CudaDream.Engine.Backends.Cpu;
using CudaDream.Engine.Graph;
using CudaDream.Engine.Ops;
using CudaDream.Engine.Randomness;
using CudaDream.Engine.Tensors;
using Xunit;

namespace CudaDream.Engine.Tests.Autodiff;

/// <summary>
/// A tiny float64 graph builder and a finite-difference gradient check in the manner of
/// torch.autograd.gradcheck: loss = Σ y·r for a fixed random r, analytic gradients from the
/// differentiated graph, numeric ones from central differences.
/// </summary>
internal sealed class GradCheck
{
    public ComputeGraph Graph { get; } = new() { Source = "gradcheck" };
    private readonly List<Value> _wrt = new();
    private readonly Dictionary<Value, double[]> _inputs = new();
    private ulong _seed = 17;
    private int _count;

    /// <summary>A graph input with random N(0,1)·scale values; differentiated when wrt.</summary>
    public Value Input(int[] shape, bool wrt = true, double scale = 1)
    {
        var v = new Value($"in{_count++}", DType.F64, shape);
        Graph.Inputs.Add(v);
        _inputs[v] = Random(shape, scale);
        if (wrt) _wrt.Add(v);
        return v;
    }

    /// <summary>A constant (weight) with random values; differentiated when wrt.</summary>
    public Value Weight(int[] shape, bool wrt = true, double scale = 1, double offset = 0)
    {
        var data = Random(shape, scale).Select(x => x + offset).ToArray();
        var v = new Value($"w{_count++}", DType.F64, shape) { Constant = Tensor.FromArray(data, shape), IsWeight = true };
        if (wrt) _wrt.Add(v);
        return v;
    }

    public Value Const(double[] data, int[] shape) => new($"c{_count++}", DType.F64, shape) { Constant = Tensor.FromArray(data, shape) };
    public Value ConstLongs(long[] data) => new($"c{_count++}", DType.I64, new[] { data.Length }) { Constant = Tensor.FromArray(data, data.Length) };

    public Value[] Node(string op, Value?[] inputs, Attributes? attrs = null, int outputs = 1)
    {
        var outs = Enumerable.Range(0, outputs).Select(i => new Value($"v{_count++}", DType.F64, null)).ToArray();
        var n = new Node(op, $"/m/{op}_{_count++}", inputs, outs, attrs);
        OpRegistry.InferShapes(n);
        Graph.AddNode(n);
        return outs;
    }

    public Value Node1(string op, params Value?[] inputs) => Node(op, inputs)[0];
    public Value Node1(string op, Attributes attrs, params Value?[] inputs) => Node(op, inputs, attrs)[0];

    private double[] Random(int[] shape, double scale)
    {
        var f = new float[Shapes.Numel(shape)];
        CounterRng.FillNormal(f, _seed++, 0, RandomPurpose.Noise);
        return f.Select(x => scale * x).ToArray();
    }

    /// <summary>Checks d(Σ y·r)/d(every wrt value) against central differences on a sample of elements.</summary>
    public void Check(Value y, double tolerance = 1e-6, int samplesPerTensor = 12, double h = 1e-6)
    {
        var r = Const(Random(y.Shape!, 1), y.Shape!);
        var prod = Node1("Mul", y, r);
        var loss = Node1("ReduceSum", new Attributes().Set("keepdims", 0L), prod);
        Graph.Outputs.Add(loss);
        int forwardNodes = Graph.Nodes.Count;
        var grads = Differentiator.Differentiate(Graph, loss, _wrt);
        foreach (var (v, g) in grads)
        {
            Assert.True(g != null, $"no gradient reached {v.Name}");
            Graph.Outputs.Add(g!);
        }
        Assert.True(Graph.Nodes.Count > forwardNodes);
        var plan = ExecutionPlan.Create(Graph);
        using var exec = new CpuExecutor(plan, CpuContext.Reference);

        double Loss()
        {
            var feed = _inputs.ToDictionary(kv => kv.Key.Name, kv => Tensor.FromArray(kv.Value, kv.Key.Shape!));
            return exec.Run(feed, new[] { loss })[loss.Name].ToFloat64Array()[0];
        }

        var feed0 = _inputs.ToDictionary(kv => kv.Key.Name, kv => Tensor.FromArray(kv.Value, kv.Key.Shape!));
        var analytic = exec.Run(feed0, grads.Values!);
        foreach (var (v, g) in grads)
        {
            var a = analytic[g!.Name].ToFloat64Array();
            var data = _inputs.TryGetValue(v, out var arr) ? arr : null;
            int n = a.Length;
            for (int s = 0; s < Math.Min(samplesPerTensor, n); s++)
            {
                int idx = (int)((long)s * 7919 % n);
                double orig = data != null ? data[idx] : v.Constant!.Span<double>()[idx];
                void Set(double val) { if (data != null) data[idx] = val; else v.Constant!.Span<double>()[idx] = val; }
                Set(orig + h);
                double lp = Loss();
                Set(orig - h);
                double lm = Loss();
                Set(orig);
                double numeric = (lp - lm) / (2 * h);
                Assert.True(Math.Abs(a[idx] - numeric) <= tolerance * (1 + Math.Abs(numeric)),
                    $"d loss / d {v.Name}[{idx}]: analytic {a[idx]:E6}, numeric {numeric:E6}");
            }
        }
    }
}
