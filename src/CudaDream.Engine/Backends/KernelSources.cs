using System.Reflection;
using System.Security.Cryptography;
using System.Text;
using System.Text.RegularExpressions;

namespace CudaDream.Engine.Backends;

/// <summary>One kernels/*.cu file and the kernels it exports (CD_EXPORT(alias, name-expression)).</summary>
public sealed record KernelSourceFile(string Name, string Text, IReadOnlyList<KernelExport> Exports);

public sealed record KernelExport(string Alias, string NameExpression, string File);

/// <summary>
/// The kernel sources, embedded in this assembly (kernels/*.cu, kernels/device.cuh, kernels/emu/*),
/// so NVRTC and the emulator build work from an installed CLI without the repository.
/// </summary>
public static partial class KernelSources
{
    private const string Prefix = "kernels/";
    private static readonly Lazy<IReadOnlyDictionary<string, string>> All = new(LoadAll);
    private static readonly Lazy<IReadOnlyList<KernelSourceFile>> Files = new(ParseFiles);
    private static readonly Lazy<IReadOnlyDictionary<string, KernelExport>> ByAlias = new(() =>
        Files.Value.SelectMany(f => f.Exports).ToDictionary(e => e.Alias, StringComparer.Ordinal));

    [GeneratedRegex(@"^CD_EXPORT\((\w+),\s*(.+)\)\s*$", RegexOptions.Multiline)]
    private static partial Regex ExportLine();

    /// <summary>Every embedded file by repository path relative to kernels/ ("device.cuh", "emu/runtime.cpp").</summary>
    public static IReadOnlyDictionary<string, string> Everything => All.Value;

    /// <summary>The kernel files (kernels/*.cu, not the emulator).</summary>
    public static IReadOnlyList<KernelSourceFile> KernelFiles => Files.Value;

    /// <summary>Headers a kernel may include, by include name.</summary>
    public static IReadOnlyDictionary<string, string> Headers =>
        All.Value.Where(kv => kv.Key.EndsWith(".cuh", StringComparison.Ordinal)).ToDictionary(kv => kv.Key, kv => kv.Value);

    /// <summary>Where compiled kernels (NVRTC cubins, emulator libraries) are cached, by source hash: CUDADREAM_CACHE, else the user cache folder + cudadream.</summary>
    public static string DefaultCacheDir()
    {
        var env = Environment.GetEnvironmentVariable("CUDADREAM_CACHE");
        if (!string.IsNullOrEmpty(env)) return env;
        var xdg = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
        var root = !string.IsNullOrEmpty(xdg) ? xdg
            : OperatingSystem.IsWindows() ? Environment.GetFolderPath(Environment.SpecialFolder.LocalApplicationData)
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache");
        return Path.Combine(root, "cudadream");
    }

    public static KernelExport Find(string alias) =>
        ByAlias.Value.TryGetValue(alias, out var e) ? e : throw new CudaDreamException($"no kernel exported as '{alias}' in kernels/*.cu");

    public static bool Exists(string alias) => ByAlias.Value.ContainsKey(alias);

    /// <summary>SHA-256 over names and texts, in name order: the cache key's source part.</summary>
    public static string Hash(IEnumerable<KeyValuePair<string, string>> files, params string[] extra)
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (var (name, text) in files.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            sha.AppendData(Encoding.UTF8.GetBytes(name + "\0" + text + "\0"));
        }
        foreach (var e in extra) sha.AppendData(Encoding.UTF8.GetBytes(e + "\0"));
        return Convert.ToHexString(sha.GetHashAndReset()).ToLowerInvariant()[..32];
    }

    private static IReadOnlyDictionary<string, string> LoadAll()
    {
        var asm = typeof(KernelSources).Assembly;
        var map = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var res in asm.GetManifestResourceNames())
        {
            var name = res.Replace('\\', '/');
            if (!name.StartsWith(Prefix, StringComparison.Ordinal)) continue;
            using var s = asm.GetManifestResourceStream(res)!;
            using var r = new StreamReader(s, Encoding.UTF8);
            map[name[Prefix.Length..]] = r.ReadToEnd().Replace("\r\n", "\n");
        }
        if (!map.ContainsKey("device.cuh"))
            throw new InvalidOperationException("kernel sources are not embedded in " + asm.GetName().Name);
        return map;
    }

    private static IReadOnlyList<KernelSourceFile> ParseFiles() =>
        All.Value.Where(kv => kv.Key.EndsWith(".cu", StringComparison.Ordinal) && !kv.Key.Contains('/'))
            .OrderBy(kv => kv.Key, StringComparer.Ordinal)
            .Select(kv => new KernelSourceFile(kv.Key, kv.Value,
                ExportLine().Matches(kv.Value).Select(m => new KernelExport(m.Groups[1].Value, m.Groups[2].Value.Trim(), kv.Key)).ToList()))
            .ToList();
}
