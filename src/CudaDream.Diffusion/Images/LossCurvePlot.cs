using ScottPlot;
using SkiaSharp;

namespace CudaDream.Diffusion.Images;

/// <summary>Look of <see cref="LossCurvePlot"/>.</summary>
public sealed record LossCurveOptions
{
    public int Width { get; init; } = 800;
    public int Height { get; init; } = 450;
    /// <summary>Logarithmic loss axis; non-positive losses are then left out.</summary>
    public bool LogY { get; init; }
    public string Title { get; init; } = "loss";
    public string TrainLabel { get; init; } = "train";
    public string EvalLabel { get; init; } = "eval (fixed set)";
    public string ValidationLabel { get; init; } = "validation (held-out images)";
    /// <summary>Weight of the exponential moving average drawn over the raw training loss (0 = none).</summary>
    public double Smoothing { get; init; } = 0.9;
}

/// <summary>
/// The loss curve of a run, drawn with ScottPlot: the training loss per step (raw, faint, with its moving average on top)
/// and an optional second series (the loss on a fixed evaluation set) with markers, with ticked axes and a legend.
/// Non-finite points (and non-positive ones on a log axis) are skipped.
/// </summary>
public static class LossCurvePlot
{
    private static readonly Color TrainRaw = new(31, 119, 180, 90);
    private static readonly Color TrainSmooth = new(31, 119, 180);
    private static readonly Color Eval = new(230, 110, 20);
    private static readonly Color ValidationColor = new(44, 160, 44);

    public static void Write(string path, IReadOnlyList<(int Step, double Loss)> train,
        IReadOnlyList<(int Step, double Loss)>? eval = null, LossCurveOptions? options = null, IReadOnlyList<(int Step, double Loss)>? validation = null) =>
        PngFile.Write(path, Render(train, eval, options, validation));

    /// <summary>The plot: training loss, optionally the fixed-set loss and the validation loss (held-out images), each its own series.</summary>
    public static RgbImage Render(IReadOnlyList<(int Step, double Loss)> train,
        IReadOnlyList<(int Step, double Loss)>? eval = null, LossCurveOptions? options = null, IReadOnlyList<(int Step, double Loss)>? validation = null)
    {
        options ??= new LossCurveOptions();
        if (options.Width < 200 || options.Height < 150) throw new ArgumentOutOfRangeException(nameof(options), "a loss plot needs at least 200x150 pixels");
        var trainPoints = Usable(train, options.LogY);
        var evalPoints = Usable(eval ?? [], options.LogY);
        var validationPoints = Usable(validation ?? [], options.LogY);

        var plot = new Plot();
        plot.Title(options.Title + (options.LogY ? " (log scale)" : ""));
        plot.XLabel("step");
        if (trainPoints.Count + evalPoints.Count + validationPoints.Count == 0)
            plot.Add.Annotation("no loss values yet", Alignment.MiddleCenter);
        if (trainPoints.Count > 0)
        {
            var raw = Line(plot, trainPoints, options.LogY, TrainRaw, 1);
            if (options.Smoothing > 0 && trainPoints.Count > 2)
                Line(plot, MovingAverage(trainPoints, options.Smoothing, options.LogY), options.LogY, TrainSmooth, 2.2f).LegendText = options.TrainLabel;
            else raw.LegendText = options.TrainLabel;
        }
        if (evalPoints.Count > 0)
        {
            var e = Line(plot, evalPoints, options.LogY, Eval, 2);
            e.MarkerSize = 7;
            e.MarkerShape = MarkerShape.FilledCircle;
            e.LegendText = options.EvalLabel;
        }
        if (validationPoints.Count > 0)
        {
            var v = Line(plot, validationPoints, options.LogY, ValidationColor, 2);
            v.MarkerSize = 7;
            v.MarkerShape = MarkerShape.FilledSquare;
            v.LegendText = options.ValidationLabel;
        }
        if (options.LogY)
        {
            // ScottPlot draws log axes as a linear axis over log10 values with decade ticks and their minor ticks.
            plot.Axes.Left.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic
            {
                MinorTickGenerator = new ScottPlot.TickGenerators.LogMinorTickGenerator(),
                IntegerTicksOnly = true,
                LabelFormatter = y => $"{Math.Pow(10, y):G3}",
            };
        }
        if (trainPoints.Count + evalPoints.Count + validationPoints.Count > 0) plot.ShowLegend(Alignment.UpperRight);

        return ToImage(plot, options.Width, options.Height);
    }

    /// <summary>A ScottPlot plot rendered at width×height on white (its PNG has transparency; ours are opaque RGB).</summary>
    internal static RgbImage ToImage(Plot plot, int width, int height)
    {
        var png = plot.GetImageBytes(width, height, ImageFormat.Png);
        using var bitmap = SKBitmap.Decode(png) ?? throw new InvalidOperationException("the plot did not render");
        using var opaque = new SKBitmap(new SKImageInfo(bitmap.Width, bitmap.Height, SKColorType.Rgba8888, SKAlphaType.Premul));
        using (var canvas = new SKCanvas(opaque))
        {
            canvas.Clear(SKColors.White);
            canvas.DrawBitmap(bitmap, 0, 0);
        }
        return RgbImage.FromOpaqueBitmap(opaque);
    }

    private static ScottPlot.Plottables.Scatter Line(Plot plot, List<(int Step, double Loss)> points, bool logY, Color color, float width)
    {
        var xs = points.Select(p => (double)p.Step).ToArray();
        var ys = points.Select(p => logY ? Math.Log10(p.Loss) : p.Loss).ToArray();
        var s = plot.Add.Scatter(xs, ys, color);
        s.LineWidth = width;
        s.MarkerSize = 0;
        return s;
    }

    private static List<(int Step, double Loss)> Usable(IReadOnlyList<(int Step, double Loss)> points, bool logY) =>
        points.Where(p => double.IsFinite(p.Loss) && (!logY || p.Loss > 0)).OrderBy(p => p.Step).ToList();

    /// <summary>
    /// Bias-corrected exponential moving average (TensorBoard's smoothing): m_t = β·m_{t−1} + (1−β)·x_t, shown as
    /// m_t/(1−β^t); on a log axis it averages log x, so the curve follows the raw points' geometric middle.
    /// </summary>
    private static List<(int Step, double Loss)> MovingAverage(List<(int Step, double Loss)> points, double beta, bool logY)
    {
        var result = new List<(int, double)>(points.Count);
        double m = 0, weight = 0;
        foreach (var (step, loss) in points)
        {
            m = beta * m + (1 - beta) * (logY ? Math.Log(loss) : loss);
            weight = beta * weight + (1 - beta);
            result.Add((step, logY ? Math.Exp(m / weight) : m / weight));
        }
        return result;
    }
}
