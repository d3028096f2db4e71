using CudaDream.Diffusion.Pretraining;
using CudaDream.Diffusion.Tokenizers;
using CudaDream.TestSupport;
using Xunit;

namespace CudaDream.Diffusion.Tests.Pretraining;

/// <summary>The pretraining scenes, the judge that reads them back, and the tokenizer learned on their captions.</summary>
public class ShapeScenesTests
{
    [Fact]
    public void The_judge_reads_rendered_scenes_as_captioned_and_refuses_a_wrong_caption()
    {
        int right = 0, wrongAccepted = 0, n = 200;
        for (int i = 0; i < n; i++)
        {
            var scene = ShapeScenes.Draw(5, i, 64);
            var image = ShapeScenes.Render(scene, 64);
            if (SceneJudge.Read(image, scene.Colour, scene.Background).Matches) right++;
            // The same image judged against the background's colour as the shape's: must not pass.
            if (SceneJudge.Read(image, scene.Background, scene.Colour).Matches) wrongAccepted++;
        }
        Assert.True(right >= 0.98 * n, $"only {right} of {n} rendered scenes read as their caption");
        Assert.Equal(0, wrongAccepted);
    }

    [Fact]
    public void Scenes_are_reproducible_and_cover_the_palette_and_every_shape()
    {
        var a = Enumerable.Range(0, 300).Select(i => ShapeScenes.Draw(9, i, 64)).ToList();
        var b = Enumerable.Range(0, 300).Select(i => ShapeScenes.Draw(9, i, 64)).ToList();
        Assert.Equal(a, b);
        Assert.All(a, s => Assert.NotEqual(s.Colour, s.Background));
        Assert.Equal(ShapeScenes.Palette.Count, a.Select(s => s.Colour).Distinct().Count());
        Assert.Equal(ShapeScenes.Shapes.Count, a.Select(s => s.Shape).Distinct().Count());
        Assert.Equal(ShapeScenes.Render(a[3], 64).Rgb, ShapeScenes.Render(b[3], 64).Rgb);
    }

    [Fact]
    public void The_toon_style_draws_a_dark_outline_the_flat_look_never_has()
    {
        for (int i = 0; i < 20; i++)
        {
            var scene = ShapeScenes.Draw(3, i, 64);
            Assert.Equal(0, SceneJudge.DarkFraction(ShapeScenes.Render(scene, 64)));
            Assert.InRange(SceneJudge.DarkFraction(ShapeScenes.Render(scene, 64, SceneStyle.Toon)), 0.04, 0.5);
        }
    }

    [Fact]
    public void The_caption_vocabulary_holds_every_caption_word_as_one_token_and_still_spells_anything()
    {
        using var dir = Fixtures.TempDir();
        var vocabulary = CaptionVocabulary.Train(ShapeScenes.CaptionWords());
        CaptionVocabulary.Write(vocabulary, dir.FullName);
        var tokenizer = ClipTokenizer.FromFolder(dir.FullName);
        foreach (var word in ShapeScenes.CaptionWords())
            Assert.Single(tokenizer.Pieces(word));
        var caption = ShapeScenes.Draw(1, 0, 64).Caption;
        var encoded = tokenizer.Encode(caption);
        Assert.Equal(vocabulary.StartId, encoded.InputIds[0]);
        Assert.Equal(caption.Split(' ').Length + 2, encoded.InputIds.TakeWhile(id => id != vocabulary.EndId).Count() + 1);
        // A new token is spelled in byte-level pieces, never unknown: the LoRA can learn what it means.
        var pieces = tokenizer.Pieces("sks_pixarstyle");
        Assert.True(pieces.Count > 1);
        Assert.Equal("sks_pixarstyle", string.Concat(pieces).Replace("</w>", ""));
    }
}
