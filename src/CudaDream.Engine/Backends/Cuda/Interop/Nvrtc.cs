using System.Runtime.InteropServices;
using System.Text;

namespace CudaDream.Engine.Backends.Cuda.Interop;

public enum NvrtcResult
{
    Success = 0, OutOfMemory = 1, ProgramCreationFailure = 2, InvalidInput = 3, InvalidProgram = 4, InvalidOption = 5,
    Compilation = 6, BuiltinOperationFailure = 7, NoNameExpressionsAfterCompilation = 8, NoLoweredNamesBeforeCompilation = 9,
    NameExpressionNotValid = 10, InternalError = 11,
}

/// <summary>NVRTC (CUDA 11.2+ API: CUBIN output, supported-architecture queries).</summary>
public static unsafe partial class NvrtcApi
{
    private const string L = NativeLibraries.Nvrtc;

    [LibraryImport(L, EntryPoint = "nvrtcVersion")] public static partial NvrtcResult Version(out int major, out int minor);
    [LibraryImport(L, EntryPoint = "nvrtcGetNumSupportedArchs")] public static partial NvrtcResult GetNumSupportedArchs(out int count);
    [LibraryImport(L, EntryPoint = "nvrtcGetSupportedArchs")] public static partial NvrtcResult GetSupportedArchs(int* archs);
    [LibraryImport(L, EntryPoint = "nvrtcCreateProgram")]
    public static partial NvrtcResult CreateProgram(out nint program, byte* source, byte* name, int numHeaders, byte** headers, byte** includeNames);
    [LibraryImport(L, EntryPoint = "nvrtcDestroyProgram")] public static partial NvrtcResult DestroyProgram(ref nint program);
    [LibraryImport(L, EntryPoint = "nvrtcCompileProgram")] public static partial NvrtcResult CompileProgram(nint program, int numOptions, byte** options);
    [LibraryImport(L, EntryPoint = "nvrtcGetProgramLogSize")] public static partial NvrtcResult GetProgramLogSize(nint program, out nuint size);
    [LibraryImport(L, EntryPoint = "nvrtcGetProgramLog")] public static partial NvrtcResult GetProgramLog(nint program, byte* log);
    [LibraryImport(L, EntryPoint = "nvrtcGetPTXSize")] public static partial NvrtcResult GetPtxSize(nint program, out nuint size);
    [LibraryImport(L, EntryPoint = "nvrtcGetPTX")] public static partial NvrtcResult GetPtx(nint program, byte* ptx);
    [LibraryImport(L, EntryPoint = "nvrtcGetCUBINSize")] public static partial NvrtcResult GetCubinSize(nint program, out nuint size);
    [LibraryImport(L, EntryPoint = "nvrtcGetCUBIN")] public static partial NvrtcResult GetCubin(nint program, byte* cubin);
    [LibraryImport(L, EntryPoint = "nvrtcAddNameExpression")] public static partial NvrtcResult AddNameExpression(nint program, byte* nameExpression);
    [LibraryImport(L, EntryPoint = "nvrtcGetLoweredName")] public static partial NvrtcResult GetLoweredName(nint program, byte* nameExpression, out nint lowered);
    [LibraryImport(L, EntryPoint = "nvrtcGetErrorString")] private static partial nint GetErrorString(NvrtcResult r);

    public static string ErrorName(NvrtcResult r)
    {
        try { return Marshal.PtrToStringUTF8(GetErrorString(r)) ?? r.ToString(); }
        catch (DllNotFoundException) { return "NVRTC_ERROR_" + r.ToString().ToUpperInvariant(); }
    }

    public static (int Major, int Minor) GetVersion()
    {
        NativeLibraries.Require(NativeLibraries.Nvrtc);
        CudaErrors.Check(Version(out var major, out var minor), "nvrtcVersion");
        return (major, minor);
    }

    /// <summary>The sm_XX numbers this NVRTC can emit CUBIN for (e.g. 35..90).</summary>
    public static int[] SupportedArchs()
    {
        CudaErrors.Check(GetNumSupportedArchs(out var n), "nvrtcGetNumSupportedArchs");
        var a = new int[n];
        fixed (int* p = a) CudaErrors.Check(GetSupportedArchs(p), "nvrtcGetSupportedArchs");
        return a;
    }

    internal static byte[] Utf8z(string s) => Encoding.UTF8.GetBytes(s + "\0");
}

/// <summary>An NVRTC program; destroyed when disposed.</summary>
public sealed unsafe class NvrtcProgramHandle : SafeHandle
{
    public NvrtcProgramHandle(string source, string name, IReadOnlyDictionary<string, string> headers) : base(0, true)
    {
        var src = NvrtcApi.Utf8z(source);
        var nm = NvrtcApi.Utf8z(name);
        var hs = headers.Select(h => (Text: NvrtcApi.Utf8z(h.Value), Name: NvrtcApi.Utf8z(h.Key))).ToArray();
        var pins = new List<GCHandle>();
        try
        {
            var texts = stackalloc byte*[Math.Max(1, hs.Length)];
            var names = stackalloc byte*[Math.Max(1, hs.Length)];
            for (int i = 0; i < hs.Length; i++)
            {
                var t = GCHandle.Alloc(hs[i].Text, GCHandleType.Pinned); pins.Add(t);
                var n = GCHandle.Alloc(hs[i].Name, GCHandleType.Pinned); pins.Add(n);
                texts[i] = (byte*)t.AddrOfPinnedObject();
                names[i] = (byte*)n.AddrOfPinnedObject();
            }
            nint program;
            fixed (byte* s = src, n = nm)
                CudaErrors.Check(NvrtcApi.CreateProgram(out program, s, n, hs.Length, texts, names), "nvrtcCreateProgram");
            SetHandle(program);
        }
        finally { foreach (var p in pins) p.Free(); }
    }

    public override bool IsInvalid => handle == 0;
    protected override bool ReleaseHandle() { var h = handle; return NvrtcApi.DestroyProgram(ref h) == NvrtcResult.Success; }

    public void AddNameExpression(string expression)
    {
        fixed (byte* e = NvrtcApi.Utf8z(expression)) CudaErrors.Check(NvrtcApi.AddNameExpression(handle, e), "nvrtcAddNameExpression");
    }

    /// <summary>Compiles; returns the status (a compile error is not an exception here: the caller reports the log).</summary>
    public NvrtcResult Compile(IReadOnlyList<string> options)
    {
        var opts = options.Select(NvrtcApi.Utf8z).ToArray();
        var pins = opts.Select(o => GCHandle.Alloc(o, GCHandleType.Pinned)).ToArray();
        try
        {
            var ptrs = stackalloc byte*[Math.Max(1, opts.Length)];
            for (int i = 0; i < opts.Length; i++) ptrs[i] = (byte*)pins[i].AddrOfPinnedObject();
            return NvrtcApi.CompileProgram(handle, opts.Length, ptrs);
        }
        finally { foreach (var p in pins) p.Free(); }
    }

    public string Log()
    {
        CudaErrors.Check(NvrtcApi.GetProgramLogSize(handle, out var n), "nvrtcGetProgramLogSize");
        var b = new byte[(int)n + 1];
        fixed (byte* p = b) CudaErrors.Check(NvrtcApi.GetProgramLog(handle, p), "nvrtcGetProgramLog");
        return Encoding.UTF8.GetString(b, 0, Math.Max(0, (int)n - 1)).TrimEnd('\0');
    }

    public byte[] Ptx()
    {
        CudaErrors.Check(NvrtcApi.GetPtxSize(handle, out var n), "nvrtcGetPTXSize");
        var b = new byte[(int)n];
        fixed (byte* p = b) CudaErrors.Check(NvrtcApi.GetPtx(handle, p), "nvrtcGetPTX");
        return b;
    }

    public byte[] Cubin()
    {
        CudaErrors.Check(NvrtcApi.GetCubinSize(handle, out var n), "nvrtcGetCUBINSize");
        var b = new byte[(int)n];
        fixed (byte* p = b) CudaErrors.Check(NvrtcApi.GetCubin(handle, p), "nvrtcGetCUBIN");
        return b;
    }

    public string LoweredName(string expression)
    {
        fixed (byte* e = NvrtcApi.Utf8z(expression))
        {
            CudaErrors.Check(NvrtcApi.GetLoweredName(handle, e, out var lowered), "nvrtcGetLoweredName");
            return Marshal.PtrToStringUTF8(lowered)!;
        }
    }
}
