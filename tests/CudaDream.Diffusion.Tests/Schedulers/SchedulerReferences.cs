using System.Text.Json;
using CudaDream.Diffusion.Schedulers;
using CudaDream.Engine.Formats;
using CudaDream.Engine.Tensors;
using CudaDream.TestSupport;

namespace CudaDream.Diffusion.Tests.Schedulers;

/// <summary>The diffusers 0.21.4 scheduler references of tests/fixtures/sd-tiny/refs (see its README).</summary>
internal static class SchedulerReferences
{
    private static readonly Lazy<Dictionary<string, Tensor>> Tensors = new(() =>
    {
        using var f = SafetensorsFile.Open(Fixtures.SdTiny("refs/schedulers.safetensors"));
        return f.LoadAll();
    });

    private static readonly Lazy<JsonElement> Index = new(() =>
        JsonDocument.Parse(SchedulerConfig.QuoteNonFiniteNumbers(File.ReadAllText(Fixtures.SdTiny("refs/schedulers.json")))).RootElement.GetProperty("index").Clone());

    public static Tensor Get(string name) => Tensors.Value[name];
    public static bool Has(string name) => Tensors.Value.ContainsKey(name);
    public static JsonElement Entry(string key) => Index.Value.GetProperty(key);

    /// <summary>Reference file names → CLI names.</summary>
    public static string CliName(string refName) => refName switch
    {
        "euler_ancestral" => "euler-a",
        "dpmpp_2m_karras" => "dpmpp-2m-karras",
        _ => refName,
    };

    public static float[] Row(Tensor stacked, int row)
    {
        var all = stacked.ReadOnlySpan<float>();
        int per = all.Length / stacked.Shape[0];
        return all.Slice(row * per, per).ToArray();
    }

    /// <summary>The model function of the trajectories: e = (0.1·x)·(t/1000) + 0.05·cos(t/100), float32.</summary>
    public static float[] ToyModel(ReadOnlySpan<float> x, double timestep)
    {
        float t = (float)timestep;
        float scale = t / 1000f;
        float offset = 0.05f * (float)Math.Cos(t / 100f);
        var e = new float[x.Length];
        for (int i = 0; i < x.Length; i++) e[i] = 0.1f * x[i] * scale + offset;
        return e;
    }

    public static SchedulerConfig ConfigFromJson(JsonElement config) =>
        SchedulerConfig.Parse(config.GetRawText(), "test config");
}
