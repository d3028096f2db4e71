using System.Text.Json;
using CommandLine;
using CudaDream.Diffusion.Tokenizers;

namespace CudaDream.Cli.Commands;

[Verb("tokenize", HelpText = "Show how the CLIP tokenizer of a model splits a prompt (ids, tokens, and the padded 77-token text-encoder input).")]
public sealed class TokenizeCommand : ICommand
{
    [Option("model", Required = true, HelpText = "A diffusers model folder (its tokenizer/ is read) or a tokenizer folder with vocab.json and merges.txt.")]
    public string Model { get; set; } = "";

    [Value(0, MetaName = "prompt", Required = true, HelpText = "The prompt to tokenize.")]
    public string Prompt { get; set; } = "";

    [Option("json", HelpText = "Print {\"ids\", \"tokens\", \"input_ids\", \"truncated\", \"truncated_text\"} as JSON.")]
    public bool Json { get; set; }

    [Option("cleaning", Default = TextCleaning.FixText, HelpText = "Text cleaning: FixText (transformers with ftfy installed, the default) or Basic (transformers without ftfy).")]
    public TextCleaning Cleaning { get; set; } = TextCleaning.FixText;

    public int Run()
    {
        var tokenizer = ClipTokenizer.FromFolder(Model, new ClipTokenizerOptions { Cleaning = Cleaning });
        var result = tokenizer.Encode(Prompt);
        if (result.TruncationWarning != null) Console.Error.WriteLine($"warning: {result.TruncationWarning}");

        if (Json)
        {
            Console.Out.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object?>
            {
                ["ids"] = result.Ids,
                ["tokens"] = result.Tokens,
                ["input_ids"] = result.InputIds,
                ["truncated"] = result.Truncated,
                ["truncated_text"] = result.TruncatedText,
            }, new JsonSerializerOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }));
            return 0;
        }

        Console.Out.WriteLine($"{result.Ids.Length - 2} tokens + bos/eos; text encoder input padded to {tokenizer.MaxLength}{(result.Truncated ? ", truncated" : "")}");
        int idWidth = result.Ids.Max().ToString().Length;
        for (int i = 0; i < result.Ids.Length; i++)
        {
            // A token holding part of a multi-byte character reads as U+FFFD; show its vocabulary string too.
            var text = ClipTokenizer.ReadableToken(result.Tokens[i]);
            var shown = text.Contains('\uFFFD') ? $"{text}  ({result.Tokens[i]})" : text;
            Console.Out.WriteLine($"{i,4}  {result.Ids[i].ToString().PadLeft(idWidth)}  {shown}");
        }
        Console.Out.WriteLine($"input_ids: {string.Join(' ', result.InputIds)}");
        return 0;
    }
}
