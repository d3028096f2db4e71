namespace CudaDream.Engine.Graph;

/// <summary>
/// The closed set of ops the engine knows, by name. It is filled once, when the engine assembly loads, by
/// <c>Ops.OpCatalog</c> — the only list of ops — so the graph layer looks ops up without referring to the
/// layers that implement them. An op not in the registry is an error naming the node.
/// </summary>
public static class OpRegistry
{
    private static Dictionary<string, OpDef> _table = new(StringComparer.Ordinal);

    /// <summary>Called by the op catalog's module initializer; a name defined twice is a programming error.</summary>
    internal static void Install(IEnumerable<OpDef> ops)
    {
        var table = new Dictionary<string, OpDef>(StringComparer.Ordinal);
        foreach (var op in ops)
            if (!table.TryAdd(op.Name, op)) throw new InvalidOperationException($"op '{op.Name}' is defined twice");
        _table = table;
    }

    public static IReadOnlyCollection<OpDef> All => _table.Values;
    public static IReadOnlyCollection<string> Names => _table.Keys;
    public static bool IsKnown(string op) => _table.ContainsKey(op);
    public static OpDef? TryGet(string op) => _table.GetValueOrDefault(op);

    public static OpDef Get(Node n) =>
        _table.TryGetValue(n.Op, out var d) ? d : throw new GraphException(n, $"op type '{n.Op}' is not supported by CudaDream");

    public static void InferShapes(Node n) => Get(n).InferShapes(n);

    public static long MultiplyAdds(Node n) => Get(n).MultiplyAdds?.Invoke(n) ?? 0;
}
