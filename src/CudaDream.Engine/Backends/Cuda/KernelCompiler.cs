using System.Diagnostics;
using System.Text.Json;
using System.Text.RegularExpressions;
using CudaDream.Engine.Backends.Cuda.Interop;
using CudaDream.Engine.Formats;

namespace CudaDream.Engine.Backends.Cuda;

/// <summary>Registers, shared memory and spills of one kernel, as ptxas reports them.</summary>
/// <param name="MmaInstructions">Tensor-core instructions (mma.sync, wgmma) in the kernel's PTX.</param>
/// <param name="LdmatrixInstructions">ldmatrix (warp-wide fragment loads from shared memory) in the kernel's PTX.</param>
public sealed record KernelResourceUsage(string Alias, string LoweredName, int Registers, int SharedBytes, int StackBytes, int SpillStoreBytes, int SpillLoadBytes,
    int MmaInstructions = 0, int LdmatrixInstructions = 0);

/// <summary>
/// The tensor-core instructions of one kernel entry of a PTX module, counted by opcode
/// ("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32", "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16").
/// </summary>
public sealed record PtxTensorCoreUse(IReadOnlyDictionary<string, int> Mma, IReadOnlyDictionary<string, int> Ldmatrix)
{
    public int MmaCount => Mma.Values.Sum();
    public int LdmatrixCount => Ldmatrix.Values.Sum();
}

/// <summary>One compiled kernels/*.cu: a CUBIN (or PTX for an architecture newer than NVRTC knows) and its kernels.</summary>
public sealed record CompiledKernelFile(string File, string Target, bool IsPtx, byte[] Image,
    IReadOnlyDictionary<string, string> LoweredNames, IReadOnlyList<KernelResourceUsage> Usage, bool FromCache, double Seconds);

/// <summary>
/// Compiles kernels/*.cu with NVRTC for one architecture and caches the result on disk, keyed by the
/// hash of the source, every header, the options and the NVRTC version. Without a GPU it still
/// compiles (CUBIN for any sm_XX NVRTC knows), which is what `cudadream kernels build` and CI use.
/// </summary>
public static partial class KernelCompiler
{
    [GeneratedRegex(@"Compiling entry function '([^']+)'")] private static partial Regex EntryLine();
    [GeneratedRegex(@"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")] private static partial Regex SpillLine();
    [GeneratedRegex(@"Used (\d+) registers(?:, (\d+) bytes smem)?")] private static partial Regex UsedLine();

    /// <summary>
    /// The NVRTC target for a device of compute capability <paramref name="cc"/> (e.g. 86): CUBIN for
    /// sm_86 when NVRTC knows it, else PTX for the newest architecture it knows (the driver JITs it).
    /// </summary>
    public static (string Arch, bool Ptx) TargetFor(int cc)
    {
        var supported = NvrtcApi.SupportedArchs();
        if (supported.Contains(cc)) return ($"sm_{cc}", false);
        var best = supported.Where(a => a <= cc).DefaultIfEmpty(supported.Max()).Max();
        return ($"compute_{best}", true);
    }

    /// <summary>Compiles one file. <paramref name="arch"/>: "sm_86", "sm_90a" (CUBIN) or "compute_90" (PTX).</summary>
    public static CompiledKernelFile Compile(KernelSourceFile file, string arch, string? cacheDir = null)
    {
        var sw = Stopwatch.StartNew();
        bool ptx = arch.StartsWith("compute_", StringComparison.Ordinal);
        var (major, minor) = NvrtcApi.GetVersion();
        var options = new List<string> { $"-arch={arch}", "-std=c++14", "-default-device", "-lineinfo" };
        if (!ptx) options.Add("--ptxas-options=-v");
        var key = KernelSources.Hash(KernelSources.Headers.Append(new(file.Name, file.Text)), string.Join(" ", options), $"nvrtc {major}.{minor} report 3");
        var dir = Path.Combine(cacheDir ?? KernelSources.DefaultCacheDir(), "nvrtc");
        var cached = TryReadCache(dir, key, file.Name, arch, ptx);
        if (cached != null) return cached with { Seconds = sw.Elapsed.TotalSeconds };

        using var program = new NvrtcProgramHandle(file.Text, "kernels/" + file.Name, KernelSources.Headers);
        foreach (var e in file.Exports) program.AddNameExpression(e.NameExpression);
        var status = program.Compile(options);
        var log = program.Log();
        if (status != NvrtcResult.Success)
            throw new CudaDreamException($"NVRTC {major}.{minor} could not compile kernels/{file.Name} for {arch}:\n{log.Trim()}");
        var lowered = file.Exports.ToDictionary(e => e.Alias, e => program.LoweredName(e.NameExpression));
        var image = ptx ? program.Ptx() : program.Cubin();
        var text = System.Text.Encoding.UTF8.GetString(ptx ? image : program.Ptx());
        var tensorCores = TensorCoreUse(text);
        int Mma(string entry) => tensorCores.TryGetValue(entry, out var u) ? u.MmaCount : 0;
        int Ldmatrix(string entry) => tensorCores.TryGetValue(entry, out var u) ? u.LdmatrixCount : 0;
        var usage = ParseUsage(log, lowered).Select(u => u with { MmaInstructions = Mma(u.LoweredName), LdmatrixInstructions = Ldmatrix(u.LoweredName) }).ToList();
        if (ptx) usage = lowered.Select(kv => new KernelResourceUsage(kv.Key, kv.Value, 0, 0, 0, 0, 0, Mma(kv.Value), Ldmatrix(kv.Value))).ToList();
        var result = new CompiledKernelFile(file.Name, arch, ptx, image, lowered, usage, false, sw.Elapsed.TotalSeconds);
        WriteCache(dir, key, result);
        return result;
    }

    /// <summary>Tensor-core instructions per kernel entry of a PTX module: mma.sync (Turing and later) and wgmma (Hopper).</summary>
    public static Dictionary<string, int> CountMma(string ptx) => TensorCoreUse(ptx).ToDictionary(kv => kv.Key, kv => kv.Value.MmaCount, StringComparer.Ordinal);

    /// <summary>mma.sync/wgmma and ldmatrix instructions per kernel entry of a PTX module, by opcode (comments are no instructions).</summary>
    public static Dictionary<string, PtxTensorCoreUse> TensorCoreUse(string ptx)
    {
        var result = new Dictionary<string, PtxTensorCoreUse>(StringComparer.Ordinal);
        Dictionary<string, int>? mma = null, ldmatrix = null;
        foreach (var raw in ptx.Split('\n'))
        {
            var line = raw.Trim();
            var m = PtxEntry().Match(line);
            if (m.Success)
            {
                mma = new(StringComparer.Ordinal);
                ldmatrix = new(StringComparer.Ordinal);
                result[m.Groups[1].Value] = new PtxTensorCoreUse(mma, ldmatrix);
                continue;
            }
            if (mma == null || ldmatrix == null) continue;
            var target = line.StartsWith("mma.sync", StringComparison.Ordinal) || line.StartsWith("wgmma.mma_async", StringComparison.Ordinal) ? mma
                : line.StartsWith("ldmatrix", StringComparison.Ordinal) ? ldmatrix : null;
            if (target == null) continue;
            int end = line.IndexOfAny([' ', '\t']);
            var opcode = end < 0 ? line : line[..end];
            target[opcode] = target.GetValueOrDefault(opcode) + 1;
        }
        return result;
    }

    [System.Text.RegularExpressions.GeneratedRegex(@"^(?:\.(?:visible|weak)\s+)?\.entry\s+([A-Za-z0-9_$]+)")]
    private static partial System.Text.RegularExpressions.Regex PtxEntry();

    /// <summary>Reads ptxas's -v report (NVRTC puts it into the program log).</summary>
    public static IReadOnlyList<KernelResourceUsage> ParseUsage(string log, IReadOnlyDictionary<string, string> loweredByAlias)
    {
        var aliasByLowered = loweredByAlias.ToDictionary(kv => kv.Value, kv => kv.Key);
        var result = new List<KernelResourceUsage>();
        string? entry = null;
        int stack = 0, spillStores = 0, spillLoads = 0;
        foreach (var line in log.Split('\n'))
        {
            var m = EntryLine().Match(line);
            if (m.Success) { entry = m.Groups[1].Value; stack = spillStores = spillLoads = 0; continue; }
            m = SpillLine().Match(line);
            if (m.Success && entry != null)
            {
                stack = int.Parse(m.Groups[1].Value); spillStores = int.Parse(m.Groups[2].Value); spillLoads = int.Parse(m.Groups[3].Value);
                continue;
            }
            m = UsedLine().Match(line);
            if (m.Success && entry != null)
            {
                int smem = m.Groups[2].Success ? int.Parse(m.Groups[2].Value) : 0;
                result.Add(new KernelResourceUsage(aliasByLowered.GetValueOrDefault(entry, entry), entry, int.Parse(m.Groups[1].Value), smem, stack, spillStores, spillLoads));
                entry = null;
            }
        }
        return result;
    }

    private sealed record CacheEntry(string File, string Target, bool IsPtx, Dictionary<string, string> LoweredNames, List<KernelResourceUsage> Usage);

    private static CompiledKernelFile? TryReadCache(string dir, string key, string file, string arch, bool ptx)
    {
        var meta = Path.Combine(dir, key + ".json");
        var bin = Path.Combine(dir, key + (ptx ? ".ptx" : ".cubin"));
        if (!File.Exists(meta) || !File.Exists(bin)) return null;
        try
        {
            var e = JsonSerializer.Deserialize<CacheEntry>(File.ReadAllText(meta));
            if (e == null || e.File != file || e.Target != arch) return null;
            return new CompiledKernelFile(file, arch, ptx, File.ReadAllBytes(bin), e.LoweredNames, e.Usage, true, 0);
        }
        catch (Exception ex) when (ex is IOException or JsonException) { return null; }
    }

    private static void WriteCache(string dir, string key, CompiledKernelFile c)
    {
        try
        {
            Directory.CreateDirectory(dir);
            AtomicFile.WriteAllBytes(Path.Combine(dir, key + (c.IsPtx ? ".ptx" : ".cubin")), c.Image);
            var e = new CacheEntry(c.File, c.Target, c.IsPtx, new(c.LoweredNames), c.Usage.ToList());
            AtomicFile.WriteAllText(Path.Combine(dir, key + ".json"), JsonSerializer.Serialize(e));
        }
        catch (IOException) { } // a read-only cache only costs a recompile
        catch (UnauthorizedAccessException) { }
    }
}
