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

    // A crafted file can declare any attribute with any type: a mismatch is the file's fault (found by fuzzing),
    // reported as such, never an InvalidCastException.
    public long Int(string name, long fallback) => _values.TryGetValue(name, out var v) ? Number<long>(name, v) : fallback;
    public long Int(string name) => _values.TryGetValue(name, out var v) ? Number<long>(name, v) : throw new KeyNotFoundException($"attribute '{name}' is required");
    public float Float(string name, float fallback) => _values.TryGetValue(name, out var v) ? Number<float>(name, v) : fallback;
    public string String(string name, string fallback) => _values.TryGetValue(name, out var v) ? As<string>(name, v) : fallback;
    public long[]? Ints(string name) => _values.TryGetValue(name, out var v) ? As<long[]>(name, v) : null;
    public float[]? Floats(string name) => _values.TryGetValue(name, out var v) ? As<float[]>(name, v) : null;
    public Tensor? Tensor(string name) => _values.TryGetValue(name, out var v) ? As<Tensor>(name, v) : null;

    private static T As<T>(string name, object v) where T : class =>
        v as T ?? throw new CudaDreamException($"attribute '{name}' holds {Kind(v)} where {Kind(typeof(T))} is expected");

    private static T Number<T>(string name, object v) => v switch
    {
        long or float => (T)Convert.ChangeType(v, typeof(T), System.Globalization.CultureInfo.InvariantCulture),
        _ => throw new CudaDreamException($"attribute '{name}' holds {Kind(v)} where a number is expected"),
    };

    private static string Kind(object v) => Kind(v.GetType());

    private static string Kind(Type t) =>
        t == typeof(long) ? "an int" : t == typeof(float) ? "a float" : t == typeof(string) ? "a string" : t == typeof(long[]) ? "ints"
        : t == typeof(float[]) ? "floats" : t == typeof(Tensor) ? "a tensor" : t.Name;

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
