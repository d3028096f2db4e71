using CudaDream.Diffusion.Training;
using CudaDream.TestSupport;
using Xunit;

namespace CudaDream.Diffusion.Tests.Training;

public class DreamBoothConfigTests
{
    private static string Write(TempDir dir, string json)
    {
        var path = dir.File("run.json");
        File.WriteAllText(path, json);
        return path;
    }

    private static string Concept(string extra = "") =>
        $$"""{ "instance_data_dir": "{{TrainingFixtures.Concepts("orange-tiles").Replace("\\", "/")}}", "instance_prompt": "a sks pattern"{{extra}} }""";

    [Fact]
    public void ReadsFileAndFlagsOverrideIt()
    {
        using var dir = Fixtures.TempDir();
        var path = Write(dir, $$"""
            { "model": "{{Fixtures.SdTiny().Replace("\\", "/")}}", "output_dir": "out", "learning_rate": 1e-4, "lr_scheduler": "cosine",
              "lora_targets": ["attention", "ff"], "random_flip": true, "concepts": [ {{Concept()}} ] }
            """);
        var loaded = DreamBoothConfig.Load(path, new[] { "--learning-rate", "5e-5", "--max-train-steps=12", "--center-crop", "false", "--train-text-encoder" });
        var o = loaded.Options;
        Assert.Equal(5e-5, o.LearningRate);
        Assert.Equal(12, o.MaxTrainSteps);
        Assert.False(o.CenterCrop);
        Assert.True(o.TrainTextEncoder);
        Assert.True(o.RandomFlip);
        Assert.Equal("cosine", o.LrScheduler);
        Assert.Equal(new[] { "attention", "ff" }, o.LoraTargets);
        Assert.Equal(Path.Combine(dir.FullName, "out"), o.OutputDir);
        Assert.Single(o.Concepts);
    }

    [Fact]
    public void ExtensionConceptListLoadsWithOneNoticeForUnusedFields()
    {
        using var dir = Fixtures.TempDir();
        // The AUTOMATIC1111 DreamBooth extension's concepts list, as its UI writes it.
        var concepts = Write(dir, $$"""
            [ { "class_data_dir": "", "class_guidance_scale": 7.5, "class_infer_steps": 40, "class_negative_prompt": "blurry", "class_prompt": "a pattern",
                "class_token": "pattern", "instance_data_dir": "{{TrainingFixtures.Concepts("orange-tiles").Replace("\\", "/")}}", "instance_prompt": "[filewords]",
                "instance_token": "sks", "is_valid": true, "n_save_sample": 1, "num_class_images": 0, "num_class_images_per": 2, "sample_seed": -1,
                "save_guidance_scale": 7.5, "save_infer_steps": 20, "save_sample_negative_prompt": "", "save_sample_prompt": "", "save_sample_template": "" } ]
            """);
        var loaded = DreamBoothConfig.Load(null, new[] { "--model", Fixtures.SdTiny(), "--output-dir", dir.File("out"), "--concepts", concepts });
        var c = Assert.Single(loaded.Options.Concepts);
        Assert.Equal(2, c.NumClassImagesPer);
        Assert.Equal(40, c.ClassInferSteps);
        var notice = Assert.Single(loaded.Notices);
        Assert.Contains("is_valid, num_class_images, save_sample_template", notice);
    }

    /// <summary>[T1] acceptance: a bad configuration ends with one line per problem and creates nothing.</summary>
    [Fact]
    public void BadConfigListsEveryProblemAndCreatesNothing()
    {
        using var dir = Fixtures.TempDir();
        var output = dir.File("never-created");
        var path = Write(dir, $$"""
            { "model": "{{Fixtures.SdTiny().Replace("\\", "/")}}", "output_dir": "{{output.Replace("\\", "/")}}", "lerning_rate": 1e-4,
              "learning_rate": -0.001, "resolution": "500", "concepts": [ { "instance_data_dir": "/no/such/folder", "instance_prompt": "x" } ] }
            """);
        var e = Assert.Throws<ConfigException>(() => DreamBoothConfig.Load(path, Array.Empty<string>()));
        Assert.Contains(e.Problems, p => p.Contains("unknown setting 'lerning_rate'") && p.Contains("did you mean 'learning_rate'"));
        // Unknown keys are reported first; the values are then validated on a corrected file.
        File.WriteAllText(path, File.ReadAllText(path).Replace("\"lerning_rate\": 1e-4,", ""));
        e = Assert.Throws<ConfigException>(() => DreamBoothConfig.Load(path, Array.Empty<string>()));
        Assert.Contains(e.Problems, p => p.StartsWith("learning_rate: -0.001"));
        Assert.Contains(e.Problems, p => p.StartsWith("resolution: '500'"));
        Assert.Contains(e.Problems, p => p.Contains("instance_data_dir '/no/such/folder' not found"));
        Assert.Equal(e.Problems.Count, e.Message.Split(Environment.NewLine).Length);
        Assert.False(Directory.Exists(output));
    }

    [Fact]
    public void MisspelledFlagIsNamed()
    {
        var e = Assert.Throws<ConfigException>(() => DreamBoothConfig.Load(null, new[] { "--lora-rnak", "8" }));
        Assert.Contains(e.Problems, p => p.Contains("unknown flag '--lora-rnak'") && p.Contains("--lora-rank"));
    }

    [Fact]
    public void EveryRunSettingHasHelp()
    {
        var help = DreamBoothConfig.Help();
        foreach (var name in DreamBoothConfig.RunSettings.Keys) Assert.Contains("--" + name.Replace('_', '-'), help);
        foreach (var name in new[] { "model", "output_dir", "resolution", "train_batch_size", "max_train_steps", "learning_rate", "lr_scheduler",
                     "lr_warmup_steps", "seed", "lora_rank", "lora_alpha", "prior_loss_weight", "sample_every_n_steps", "save_every_n_steps", "backend", "concepts" })
            Assert.True(DreamBoothConfig.RunSettings.ContainsKey(name), $"setting {name} is required by the issue");
    }

    [Theory]
    [InlineData("my dog (3).jpg", "my dog")]
    [InlineData("portrait_of_sks_012.png", "portrait of sks")]
    [InlineData("a_cat-2.webp", "a cat")]
    [InlineData("42.png", "42")]
    public void CaptionsComeFromFileNamesWithoutCounters(string file, string caption)
    {
        using var dir = Fixtures.TempDir();
        Assert.Equal(caption, TrainingData.Caption(dir.File(file)));
    }

    [Theory]
    [InlineData("a photo of a dog", "sks", "dog", "a photo of a sks dog")]
    [InlineData("a photo", "sks", "dog", "sks a photo")]
    [InlineData("a sks dog", "sks", "dog", "a sks dog")]
    [InlineData("[filewords] in the park", "sks", "", "sks a dog in the park")]
    public void InstanceTokenIsInsertedBeforeTheClassToken(string prompt, string token, string classToken, string expected)
    {
        var c = new ConceptOptions { InstancePrompt = prompt, InstanceToken = token, ClassToken = classToken };
        Assert.Equal(expected, TrainingData.InstancePrompt(c, "a dog"));
    }
}
