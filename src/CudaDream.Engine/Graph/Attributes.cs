using CudaDream.Engine.Tensors;

namespace CudaDream.Engine.Graph;

/// <summary>Node attributes: ints (long), floats, strings, int/float lists and tensors, by name.</summary>
public sealed class Attributes
{
    private readonly Dictionary<string, object> _values = new(StringComparer.Ordinal);

    public IEnumerable<string> Names => _values.Keys;
    public bool Has(string name) => _values.ContainsKey(name);
    public object? Raw(string name) => _values.TryGetValue(name, out var v) ? v : null;

    public Attributes Set(string name, long v) { _values[name] = v; return this; }
    public Attributes Set(string name, float v) { _values[name] = v; return this; }
    public Attributes Set(string name, string v) { _values[name] = v; return this; }
    public Attributes Set(string name, long[] v) { _values[name] = v; return this; }
    public Attributes Set(string name, float[] v) { _values[name] = v; return this; }
    public Attributes Set(string name, Tensor v) { _values[name] = v; return this; }

    public long Int(string name, long fallback) => _values.TryGetValue(name, out var v) ? Convert.ToInt64(v) : fallback;
    public long Int(string name) => _values.TryGetValue(name, out var v) ? Convert.ToInt64(v) : throw new KeyNotFoundException($"attribute '{name}' is required");
    public float Float(string name, float fallback) => _values.TryGetValue(name, out var v) ? Convert.ToSingle(v) : fallback;
    public string String(string name, string fallback) => _values.TryGetValue(name, out var v) ? (string)v : fallback;
    public long[]? Ints(string name) => _values.TryGetValue(name, out var v) ? (long[])v : null;
    public float[]? Floats(string name) => _values.TryGetValue(name, out var v) ? (float[])v : null;
    public Tensor? Tensor(string name) => _values.TryGetValue(name, out var v) ? (Tensor)v : null;

    public Attributes Clone()
    {
        var a = new Attributes();
        foreach (var kv in _values) a._values[kv.Key] = kv.Value;
        return a;
    }

    public override string ToString() => string.Join(", ", _values.Select(kv => $"{kv.Key}={Format(kv.Value)}"));

    private static string Format(object v) => v switch
    {
        long[] a => "[" + string.Join(",", a) + "]",
        float[] a => "[" + string.Join(",", a) + "]",
        _ => v.ToString() ?? "",
    };
}
