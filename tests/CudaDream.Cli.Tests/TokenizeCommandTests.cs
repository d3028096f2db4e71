using System.Text.Json;
using CudaDream.TestSupport;
using Xunit;

namespace CudaDream.Cli.Tests;

[Collection("Console")]
public class TokenizeCommandTests
{
    private static JsonElement Reference(string text)
    {
        var doc = JsonDocument.Parse(File.ReadAllText(Fixtures.SdTiny("refs/tokenizer_expected.json")));
        return doc.RootElement.GetProperty("cases").EnumerateArray().First(c => c.GetProperty("text").GetString() == text);
    }

    private static int[] Ints(JsonElement e) => e.EnumerateArray().Select(x => x.GetInt32()).ToArray();

    [Fact]
    public void JsonOutputMatchesThePipelineTokenization()
    {
        var (code, stdout, _) = CliRunner.Run("tokenize", "--model", Fixtures.SdTiny(), "--json", "a photo of sks dog");
        Assert.Equal(0, code);
        var json = JsonDocument.Parse(stdout).RootElement;
        var reference = Reference("a photo of sks dog");
        Assert.Equal(Ints(reference.GetProperty("untruncated_ids")), Ints(json.GetProperty("ids")));
        Assert.Equal(Ints(reference.GetProperty("input_ids")), Ints(json.GetProperty("input_ids")));
        var tokens = json.GetProperty("tokens").EnumerateArray().Select(t => t.GetString()).ToArray();
        Assert.Equal(reference.GetProperty("bpe_tokens").EnumerateArray().Select(t => t.GetString()), tokens[1..^1]);
    }

    [Fact]
    public void LongPromptIsTruncatedWithAWarningOnStderr()
    {
        var reference = Reference("a dog wearing a red hat and blue sunglasses sitting on a wooden bench in a park at sunset, cinematic lighting, ultra realistic, depth of field, bokeh, 35mm photograph, film grain, award winning, sharp focus, intricate details, vibrant colors, golden hour, soft shadows, high dynamic range, volumetric fog");
        var (code, stdout, stderr) = CliRunner.Run("tokenize", "--model", Fixtures.SdTiny("tokenizer"), "--json", reference.GetProperty("text").GetString()!);
        Assert.Equal(0, code);
        var json = JsonDocument.Parse(stdout).RootElement;
        Assert.Equal(Ints(reference.GetProperty("input_ids")), Ints(json.GetProperty("input_ids")));
        Assert.Equal(150, json.GetProperty("ids").GetArrayLength());
        Assert.True(json.GetProperty("truncated").GetBoolean());
        Assert.Contains("truncated because CLIP can only handle sequences up to 77 tokens", stderr);
        Assert.EndsWith("volumetric fog", json.GetProperty("truncated_text").GetString());
    }

    [Fact]
    public void PlainOutputListsIdsAndTokens()
    {
        var (code, stdout, _) = CliRunner.Run("tokenize", "--model", Fixtures.Path("clip-tokenizer"), "sks_pixarstyle");
        Assert.Equal(0, code);
        // Reference ids from tests/fixtures/clip-tokenizer/expected_ids.json.
        foreach (var (id, token) in new[] { (48136, "sks</w>"), (318, "_</w>"), (6185, "pix"), (516, "ar"), (1844, "style</w>") })
            Assert.Matches($@"\s{id}\s+{System.Text.RegularExpressions.Regex.Escape(token)}", stdout);
        Assert.Contains("input_ids: 49406 48136 318 6185 516 1844 49407 49407", stdout);
    }

    [Fact]
    public void MissingModelIsAOneLineErrorWithExitCode1()
    {
        using var dir = Fixtures.TempDir();
        var (code, stdout, stderr) = CliRunner.Run("tokenize", "--model", dir.FullName, "a cat");
        Assert.Equal(1, code);
        Assert.Equal("", stdout);
        Assert.StartsWith("error: ", stderr);
        Assert.Single(stderr.Trim().Split('\n'));
        Assert.Contains(dir.FullName, stderr);
    }
}
