using CudaDream.Engine.Training.LearningRate;
using Xunit;

namespace CudaDream.Engine.Tests.Training;

/// <summary>Values worked out by hand from diffusers/optimization.py's formulas (arithmetic in the comments).</summary>
public class LrScheduleTests
{
    private static double M(LrScheduleOptions o, int step) => new LrSchedule(o).Multiplier(step);

    [Fact]
    public void Constant_and_constant_with_warmup()
    {
        Assert.Equal(1.0, M(new(LrScheduleKind.Constant, WarmupSteps: 10), 0)); // constant ignores warmup
        var o = new LrScheduleOptions(LrScheduleKind.ConstantWithWarmup, WarmupSteps: 4);
        Assert.Equal(0.0, M(o, 0));   // 0/4
        Assert.Equal(0.75, M(o, 3));  // 3/4
        Assert.Equal(1.0, M(o, 4));
        Assert.Equal(1.0, M(o, 1000));
    }

    [Fact]
    public void Linear_with_warmup()
    {
        var o = new LrScheduleOptions(LrScheduleKind.Linear, WarmupSteps: 10, TotalSteps: 100);
        Assert.Equal(0.5, M(o, 5));                 // warmup: 5/10
        Assert.Equal(1.0, M(o, 10));                // (100−10)/90
        Assert.Equal(0.5, M(o, 55));                // (100−55)/90 = 45/90
        Assert.Equal(1.0 / 90, M(o, 99), 15);       // 1/90
        Assert.Equal(0.0, M(o, 100));
        Assert.Equal(0.0, M(o, 120));               // max(0, negative)
    }

    [Fact]
    public void Cosine_with_warmup_half_cycle()
    {
        var o = new LrScheduleOptions(LrScheduleKind.Cosine, WarmupSteps: 10, TotalSteps: 100);
        // step 75: progress = (75−10)/(100−10) = 65/90 = 0.72222…; 0.5·(1 + cos(π·0.5·2·0.72222)) = 0.5·(1 + cos(130°))
        // cos(130°) = −0.6427876097, so 0.5·0.3572123903 = 0.1786061952.
        Assert.Equal(0.1786061952, M(o, 75), 9);
        Assert.Equal(0.3, M(o, 3), 15);             // warmup 3/10
        Assert.Equal(1.0, M(o, 10), 15);            // progress 0: cos 0 = 1
        Assert.Equal(0.5, M(o, 55), 12);            // progress 0.5: 0.5·(1 + cos 90°)
        Assert.Equal(0.0, M(o, 100), 12);           // progress 1: cos 180° = −1
    }

    [Fact]
    public void Cosine_with_hard_restarts()
    {
        var o = new LrScheduleOptions(LrScheduleKind.CosineWithRestarts, WarmupSteps: 0, TotalSteps: 100, NumCycles: 2);
        Assert.Equal(1.0, M(o, 0), 12);             // (2·0) mod 1 = 0
        Assert.Equal(0.5, M(o, 25), 12);            // (2·0.25) mod 1 = 0.5 → 0.5·(1 + cos 90°)
        Assert.Equal(1.0, M(o, 50), 12);            // (2·0.5) mod 1 = 0: restart
        Assert.Equal(0.5, M(o, 75), 12);            // (2·0.75) mod 1 = 0.5
        Assert.Equal(0.0, M(o, 100));               // progress ≥ 1
        // Default one cycle: step 40 of 100 → 0.5·(1 + cos(0.4π)) = 0.5·(1 + 0.3090169944) = 0.6545084972
        Assert.Equal(0.6545084972, M(o with { NumCycles = null }, 40), 9);
    }

    [Fact]
    public void Polynomial_divides_lr_end_by_the_base_rate()
    {
        var o = new LrScheduleOptions(LrScheduleKind.Polynomial, WarmupSteps: 0, TotalSteps: 100, Power: 2, LrEnd: 1e-7, BaseLearningRate: 1e-4);
        // step 50: remaining = 1 − 50/100 = 0.5; decay = (1e-4 − 1e-7)·0.5² + 1e-7 = 2.4975e-5 + 1e-7 = 2.5075e-5;
        // multiplier = 2.5075e-5 / 1e-4 = 0.25075
        Assert.Equal(0.25075, M(o, 50), 12);
        Assert.Equal(1.0, M(o, 0), 12);
        Assert.Equal(0.001, M(o, 100), 12);         // (1e-4 − 1e-7)·0 + 1e-7 = 1e-7 → 1e-7/1e-4
        Assert.Equal(0.001, M(o, 150), 12);         // past the end: lr_end / lr_init
        var warm = o with { WarmupSteps = 20, Power = 1 };
        Assert.Equal(0.25, M(warm, 5));             // 5/20
        // step 60: remaining = 1 − 40/80 = 0.5; (1e-4 − 1e-7)·0.5 + 1e-7 = 5.005e-5 → 0.5005
        Assert.Equal(0.5005, M(warm, 60), 12);
        Assert.Throws<CudaDreamException>(() => new LrSchedule(o with { BaseLearningRate = 1e-8 }));
    }

    [Fact]
    public void Names_parse_as_diffusers_spells_them()
    {
        Assert.Equal(LrScheduleKind.CosineWithRestarts, LrSchedule.ParseKind("cosine_with_restarts"));
        Assert.Equal(LrScheduleKind.ConstantWithWarmup, LrSchedule.ParseKind("constant_with_warmup"));
        Assert.Throws<CudaDreamException>(() => LrSchedule.ParseKind("onecycle"));
        Assert.Equal(2e-4 * 0.5, new LrSchedule(new(LrScheduleKind.Linear, 0, 100)).LearningRate(2e-4, 50));
    }
}
