using System.Text.Json;
using CudaDream.Diffusion.Tokenizers;
using CudaDream.Engine;
using CudaDream.Engine.Formats;
using CudaDream.TestSupport;
using Xunit;

namespace CudaDream.Diffusion.Tests.Tokenizers;

/// <summary>
/// Every expected id here comes from transformers' CLIPTokenizer runs recorded in the fixtures
/// (tests/fixtures/clip-tokenizer/expected_ids.json with the real 49408-token vocabulary, and
/// tests/fixtures/sd-tiny/refs/tokenizer_expected.json with SD-tiny's 1000-token vocabulary).
/// </summary>
public class ClipTokenizerTests
{
    private static readonly Lazy<ClipTokenizer> RealClip = new(() => ClipTokenizer.FromFolder(Fixtures.Path("clip-tokenizer")));
    private static readonly Lazy<ClipTokenizer> TinyBasic = new(() =>
        ClipTokenizer.FromFolder(Fixtures.SdTiny(), new ClipTokenizerOptions { Cleaning = TextCleaning.Basic }));
    private static readonly Lazy<ClipTokenizer> TinyFixText = new(() => ClipTokenizer.FromFolder(Fixtures.SdTiny("tokenizer")));

    private sealed record RealCase(string Text, int[] Ids);

    private static IEnumerable<RealCase> RealCases()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Fixtures.Path("clip-tokenizer/expected_ids.json")));
        return doc.RootElement.GetProperty("cases").EnumerateArray()
            .Select(c => new RealCase(c.GetProperty("text").GetString()!, c.GetProperty("ids").EnumerateArray().Select(i => i.GetInt32()).ToArray()))
            .ToList();
    }

    private sealed record TinyCase(string Text, int[] InputIds, int[] UntruncatedIds, string[] BpeTokens, bool Truncated,
        int[] IdsIfFtfyWereIdentity, bool FtfyPathKnown);

    private static List<TinyCase> TinyCases()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Fixtures.SdTiny("refs/tokenizer_expected.json")));
        static int[] Ints(JsonElement e) => e.EnumerateArray().Select(i => i.GetInt32()).ToArray();
        return doc.RootElement.GetProperty("cases").EnumerateArray().Select(c => new TinyCase(
            c.GetProperty("text").GetString()!,
            Ints(c.GetProperty("input_ids")),
            Ints(c.GetProperty("untruncated_ids")),
            c.GetProperty("bpe_tokens").EnumerateArray().Select(t => t.GetString()!).ToArray(),
            c.GetProperty("truncated").GetBoolean(),
            Ints(c.GetProperty("ids_if_ftfy_were_identity")),
            c.GetProperty("ftfy_path_known").GetBoolean())).ToList();
    }

    [Fact]
    public void RealClipVocabularyReproducesEveryReferenceCase()
    {
        var tokenizer = RealClip.Value;
        Assert.Equal(49408, tokenizer.VocabSize);
        Assert.Equal((49406, 49407, 49407), (tokenizer.BosId, tokenizer.EosId, tokenizer.PadId));
        var cases = RealCases().ToList();
        Assert.Equal(14, cases.Count);
        foreach (var c in cases)
            Assert.True(c.Ids.SequenceEqual(tokenizer.Encode(c.Text).Ids), $"{c.Text}: got {string.Join(",", tokenizer.Encode(c.Text).Ids)}");
    }

    [Fact]
    public void RealClipVocabularyBasicPathDiffersOnlyWhereBasicTokenizerSplitsIdeographs()
    {
        var basic = ClipTokenizer.FromFolder(Fixtures.Path("clip-tokenizer"), new ClipTokenizerOptions { Cleaning = TextCleaning.Basic });
        foreach (var c in RealCases())
        {
            var ids = basic.Encode(c.Text).Ids;
            if (c.Text == "日本の猫") Assert.NotEqual(c.Ids, ids); // BasicTokenizer pads 日, 本, 猫 with spaces: four words
            else Assert.True(c.Ids.SequenceEqual(ids), c.Text);
        }
    }

    [Fact]
    public void TinyVocabularyBasicPathReproducesThePipelineTokenization()
    {
        var tokenizer = TinyBasic.Value;
        Assert.Equal((998, 999, 999, 999, 77), (tokenizer.BosId, tokenizer.EosId, tokenizer.PadId, tokenizer.UnkId, tokenizer.MaxLength));
        var cases = TinyCases();
        Assert.Equal(18, cases.Count);
        foreach (var c in cases)
        {
            var r = tokenizer.Encode(c.Text);
            Assert.True(c.InputIds.SequenceEqual(r.InputIds), $"{c.Text}: input_ids {string.Join(",", r.InputIds)}");
            Assert.True(c.UntruncatedIds.SequenceEqual(r.Ids), $"{c.Text}: ids {string.Join(",", r.Ids)}");
            Assert.Equal(c.BpeTokens, r.Tokens[1..^1]);
            Assert.Equal(c.Truncated, r.Truncated);
        }
    }

    [Fact]
    public void TinyVocabularyFixTextPathMatchesTheFtfyReferenceWhereFtfyIsKnownToKeepTheText()
    {
        var tokenizer = TinyFixText.Value;
        Assert.Equal(TextCleaning.FixText, tokenizer.Cleaning);
        foreach (var c in TinyCases().Where(c => c.FtfyPathKnown))
            Assert.True(c.IdsIfFtfyWereIdentity.SequenceEqual(tokenizer.Encode(c.Text).InputIds), c.Text);
    }

    [Fact]
    public void FixTextPathKeepsCjkAsOneWordAsFtfyDoes()
    {
        // ftfy leaves "日本の猫" unchanged, so the reference recorded with fix_text = identity applies;
        // the real-vocabulary reference (one word, 6 tokens) agrees.
        var c = TinyCases().Single(c => c.Text == "日本の猫");
        Assert.Equal(c.IdsIfFtfyWereIdentity, TinyFixText.Value.Encode(c.Text).InputIds);
        Assert.NotEqual(c.InputIds, c.IdsIfFtfyWereIdentity);
    }

    [Fact]
    public void FixTextPathUnescapesHtmlEntities()
    {
        // Recorded without unescaping: "&</w>", "am", "p</w>", ";</w>". ftfy turns "&amp;" into "&", so the
        // expected ids are the reference's without the three tokens of "amp;".
        var c = TinyCases().Single(c => c.Text.Contains("&amp;"));
        int amp = Array.IndexOf(c.BpeTokens, "&</w>");
        Assert.Equal(new[] { "am", "p</w>", ";</w>" }, c.BpeTokens[(amp + 1)..(amp + 4)]);
        var expected = c.UntruncatedIds.Take(amp + 2).Concat(c.UntruncatedIds.Skip(amp + 5)).ToArray();
        Assert.Equal(expected, TinyFixText.Value.Encode(c.Text).Ids);
        // With a literal '<' ftfy assumes HTML source and leaves entities alone (its "auto" rule).
        Assert.Contains(TinyFixText.Value.IdOf("am")!.Value, TinyFixText.Value.Encode("a < b &amp; c").Ids);
    }

    [Fact]
    public void DecomposedAccentsTokenizeLikeComposedOnes()
    {
        var c = RealCases().Single(c => c.Text == "café naïve résumé");
        var decomposed = "cafe\u0301 nai\u0308ve re\u0301sume\u0301";
        Assert.Equal(c.Ids, RealClip.Value.Encode(decomposed).Ids);
        var basic = ClipTokenizer.FromFolder(Fixtures.Path("clip-tokenizer"), new ClipTokenizerOptions { Cleaning = TextCleaning.Basic });
        Assert.Equal(c.Ids, basic.Encode(decomposed).Ids);
    }

    [Fact]
    public void FixTextPathNormalisesWidthQuotesAndLigatures()
    {
        var cat = RealCases().Single(c => c.Text == "a photo of a cat").Ids;
        Assert.Equal(cat, RealClip.Value.Encode("a photo of a ＣＡＴ").Ids);          // fullwidth forms
        Assert.Equal(cat, RealClip.Value.Encode("a\u3000photo of a cat").Ids);        // ideographic space
        var clock = RealCases().Single(c => c.Text == "isn't it 3.14 o'clock?").Ids;
        Assert.Equal(clock, RealClip.Value.Encode("isn\u2019t it 3.14 o\u2019clock?").Ids); // curly apostrophes
        Assert.Equal(RealClip.Value.Encode("fire").Ids, RealClip.Value.Encode("\uFB01re").Ids);
    }

    [Fact]
    public void LongPromptIsCutToBosPlus75TokensPlusEosWithAWarningNamingTheRest()
    {
        var c = TinyCases().Single(c => c.Truncated);
        var r = TinyBasic.Value.Encode(c.Text);
        Assert.Equal(77, r.InputIds.Length);
        Assert.Equal(c.UntruncatedIds.Take(76).Append(999), r.InputIds);
        Assert.NotNull(r.TruncatedText);
        Assert.EndsWith(r.TruncatedText!, c.Text);
        // The cut-off text is exactly the tokens the encoder did not see (untruncated_ids[76:-1], as diffusers slices).
        Assert.Equal(c.UntruncatedIds[76..^1], TinyBasic.Value.Tokenize(c.Text)[75..]);
        Assert.StartsWith("The following part of your input was truncated because CLIP can only handle sequences up to 77 tokens: ", r.TruncationWarning);
        Assert.EndsWith(r.TruncatedText!, r.TruncationWarning);

        var shortPrompt = TinyBasic.Value.Encode("a photo of sks dog");
        Assert.False(shortPrompt.Truncated);
        Assert.Null(shortPrompt.TruncatedText);
        Assert.Null(shortPrompt.TruncationWarning);
    }

    [Fact]
    public void BatchInputIdsEqualThoseThePipelineFedItsTextEncoder()
    {
        using var refs = SafetensorsFile.Open(Fixtures.SdTiny("refs/pipeline_ddim.safetensors"));
        var batch = TinyBasic.Value.EncodeBatch(["a photo of sks dog", "blurry, low quality"]);
        Assert.Equal(new[] { 2, 77 }, batch.Shape);
        var ids = batch.ToInt64Array();
        Assert.Equal(refs.Get("prompt_input_ids").ToInt64Array(), ids[..77]);
        Assert.Equal(refs.Get("negative_input_ids").ToInt64Array(), ids[77..]);
    }

    [Fact]
    public void PiecesNameTheBpeSplitOfAWord()
    {
        var c = RealCases().Single(c => c.Text == "sks_pixarstyle");
        var pieces = RealClip.Value.Pieces("sks_pixarstyle");
        // The reference ids 48136, 318, 6185, 516, 1844 are "sks</w>", "_</w>", "pix", "ar", "style</w>".
        Assert.Equal(c.Ids[1..^1].Select(id => RealClip.Value.TokenOf(id)!.Replace("</w>", "")), pieces);
        Assert.Equal(new[] { "sks", "_", "pix", "ar", "style" }, pieces);
        Assert.Single(RealClip.Value.Pieces("dog"));
    }

    [Fact]
    public void DecodeInvertsEncodeForPlainText()
    {
        var t = RealClip.Value;
        Assert.Equal("a photo of sks dog", t.Decode(t.Tokenize("a photo of sks dog")));
        Assert.Equal("café naïve résumé", t.Decode(t.Tokenize("Café naïve résumé")));
        Assert.Equal("portrait, highly detailed", t.Decode(t.Tokenize("portrait, highly detailed")));
        Assert.Equal("<|startoftext|>a <|endoftext|>", t.Decode(t.Encode("a").Ids));
        Assert.Equal("a", t.Decode(t.Encode("a").Ids, skipSpecialTokens: true));
    }

    [Fact]
    public void SpecialTokensAreSplitOutOfTheRawTextBeforeCleaning()
    {
        var t = RealClip.Value;
        var ids = t.Encode("dog!<|endoftext|>").Ids;
        Assert.Equal(t.Encode("dog!").Ids[..^1].Append(49407).Append(49407), ids);
    }

    [Fact]
    public void PadTokenIsReadFromTheConfig()
    {
        // SD 2.x pads with "!" (id 0) instead of <|endoftext|>.
        using var dir = Fixtures.TempDir();
        File.Copy(Fixtures.SdTiny("tokenizer/vocab.json"), dir.File("vocab.json"));
        File.Copy(Fixtures.SdTiny("tokenizer/merges.txt"), dir.File("merges.txt"));
        File.WriteAllText(dir.File("special_tokens_map.json"), """{"pad_token": "!", "bos_token": {"content": "<|startoftext|>"}}""");
        File.WriteAllText(dir.File("tokenizer_config.json"), """{"model_max_length": 77, "pad_token": "<|endoftext|>"}""");
        var t = ClipTokenizer.FromFolder(dir.FullName);
        Assert.Equal(0, t.PadId);
        Assert.Equal("!", t.PadToken);
        var vocab = JsonDocument.Parse(File.ReadAllText(dir.File("vocab.json"))).RootElement;
        Assert.Equal(vocab.GetProperty("!").GetInt32(), t.PadId);
        var r = t.Encode("a photo");
        Assert.Equal(999, r.InputIds[r.Ids.Length - 1]);
        Assert.All(r.InputIds[r.Ids.Length..], id => Assert.Equal(0, id));
    }

    [Fact]
    public void AcceptsTheModelFolderOrTheTokenizerFolder()
    {
        Assert.Equal(Fixtures.SdTiny("tokenizer"), ClipTokenizer.FromFolder(Fixtures.SdTiny()).Directory);
        Assert.Equal(Fixtures.SdTiny("tokenizer"), ClipTokenizer.FromFolder(Fixtures.SdTiny("tokenizer")).Directory);
    }

    [Fact]
    public void MissingFilesAreOneLineErrors()
    {
        using var dir = Fixtures.TempDir();
        var e = Assert.Throws<CudaDreamException>(() => ClipTokenizer.FromFolder(dir.FullName));
        Assert.Contains("no CLIP tokenizer", e.Message);
        File.WriteAllText(dir.File("vocab.json"), "{}");
        e = Assert.Throws<CudaDreamException>(() => ClipTokenizer.FromFolder(dir.FullName));
        Assert.Contains("merges.txt: file not found", e.Message);
        e = Assert.Throws<CudaDreamException>(() => ClipTokenizer.FromFolder(dir.File("nope")));
        Assert.Contains("folder not found", e.Message);
    }

    private static InvalidFileException LoadBroken(string vocab, string merges, string? config = null)
    {
        using var dir = Fixtures.TempDir();
        File.WriteAllText(dir.File("vocab.json"), vocab);
        File.WriteAllText(dir.File("merges.txt"), merges);
        if (config != null) File.WriteAllText(dir.File("tokenizer_config.json"), config);
        return Assert.Throws<InvalidFileException>(() => ClipTokenizer.FromFolder(dir.FullName));
    }

    private const string SmallVocab = """{"a</w>": 0, "<|startoftext|>": 1, "<|endoftext|>": 2}""";

    [Fact]
    public void MalformedFilesNameTheFileAndLine()
    {
        var e = LoadBroken(SmallVocab, "#version: 0.2\na b\nc d e\n");
        Assert.EndsWith("merges.txt", e.Path);
        Assert.Contains("line 3", e.Message);

        e = LoadBroken(SmallVocab, "#version: 0.2\nab\n");
        Assert.Contains("line 2", e.Message);

        e = LoadBroken("""{"a": "zero"}""", "");
        Assert.EndsWith("vocab.json", e.Path);
        Assert.Contains("\"a\"", e.Message);

        e = LoadBroken("""{"a": -1}""", "");
        Assert.Contains("expected an integer", e.Message);

        e = LoadBroken("""{"a": 1,""", "");
        Assert.Contains("invalid JSON", e.Message);

        e = LoadBroken("""["a"]""", "");
        Assert.Contains("JSON object", e.Message);

        e = LoadBroken("""{"a</w>": 0}""", "");
        Assert.Contains("bos_token", e.Message);

        e = LoadBroken(SmallVocab, "", """{"model_max_length": 1.5}""");
        Assert.EndsWith("tokenizer_config.json", e.Path);

        e = LoadBroken(SmallVocab, "", """{"pad_token": 7}""");
        Assert.Contains("pad_token", e.Message);
    }

    [Fact]
    public void OversizedVocabularyIsRefusedBeforeReading()
    {
        using var dir = Fixtures.TempDir();
        using (var fs = File.Create(dir.File("vocab.json"))) fs.SetLength(TokenizerFiles.MaxVocabBytes + 1); // sparse
        File.WriteAllText(dir.File("merges.txt"), "");
        var e = Assert.Throws<InvalidFileException>(() => ClipTokenizer.FromFolder(dir.FullName));
        Assert.Contains("MiB", e.Message);
    }

    [Fact]
    public void HugeModelMaxLengthMeansTheClipDefault()
    {
        using var dir = Fixtures.TempDir();
        File.WriteAllText(dir.File("vocab.json"), SmallVocab);
        File.WriteAllText(dir.File("merges.txt"), "#version: 0.2\n");
        File.WriteAllText(dir.File("tokenizer_config.json"), """{"model_max_length": 1000000000000000019884624838656}""");
        Assert.Equal(77, ClipTokenizer.FromFolder(dir.FullName).MaxLength);
        Assert.Equal(16, ClipTokenizer.FromFolder(dir.FullName, new ClipTokenizerOptions { MaxLength = 16 }).Encode("a").InputIds.Length);
    }

    [Fact]
    public void UnknownSymbolsMapToUnk()
    {
        using var dir = Fixtures.TempDir();
        File.WriteAllText(dir.File("vocab.json"), SmallVocab);
        File.WriteAllText(dir.File("merges.txt"), "#version: 0.2\n");
        var t = ClipTokenizer.FromFolder(dir.FullName);
        Assert.Equal(new[] { 1, 0, 2, 2 }, t.Encode("a b").Ids);
    }
}
