using System.Globalization;
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
    /// <summary>Weight of the exponential moving average drawn over the raw training loss (0 = none).</summary>
    public double Smoothing { get; init; } = 0.9;
}

/// <summary>
/// A small line plot of the training loss per step (raw, faint, with its moving average on top) and an
/// optional second series (e.g. the loss on a fixed evaluation set) with markers; axes carry their min and
/// max (and middle) values. Non-finite points are skipped. Text is left out when no font is available.
/// </summary>
public static class LossCurvePlot
{
    private static readonly SKColor TrainRaw = new(31, 119, 180, 90);
    private static readonly SKColor TrainSmooth = new(31, 119, 180);
    private static readonly SKColor Eval = new(230, 110, 20);
    private static readonly SKColor Axis = new(60, 60, 60);
    private static readonly SKColor Grid = new(225, 225, 225);

    public static void Write(string path, IReadOnlyList<(int Step, double Loss)> train,
        IReadOnlyList<(int Step, double Loss)>? eval = null, LossCurveOptions? options = null) =>
        PngFile.Write(path, Render(train, eval, options));

    public static RgbImage Render(IReadOnlyList<(int Step, double Loss)> train,
        IReadOnlyList<(int Step, double Loss)>? eval = null, LossCurveOptions? options = null)
    {
        options ??= new LossCurveOptions();
        if (options.Width < 200 || options.Height < 150) throw new ArgumentOutOfRangeException(nameof(options), "a loss plot needs at least 200x150 pixels");
        var trainPoints = Usable(train, options.LogY);
        var evalPoints = Usable(eval ?? [], options.LogY);

        using var bitmap = new SKBitmap(new SKImageInfo(options.Width, options.Height, SKColorType.Rgba8888, SKAlphaType.Premul));
        using var canvas = new SKCanvas(bitmap);
        canvas.Clear(SKColors.White);
        using var font = LabelFont.Create(13);
        using var titleFont = LabelFont.Create(15);
        var plot = new SKRect(70, 30, options.Width - 20, options.Height - 40);

        var all = trainPoints.Concat(evalPoints).ToList();
        if (all.Count == 0)
        {
            using var paint = new SKPaint { Color = Axis, IsAntialias = true };
            if (font != null) canvas.DrawText("no loss values yet", plot.MidX, plot.MidY, SKTextAlign.Center, font, paint);
            canvas.Flush();
            return RgbImage.FromOpaqueBitmap(bitmap);
        }

        var axes = new Axes(plot, all.Min(p => p.Step), all.Max(p => p.Step), all.Min(p => p.Loss), all.Max(p => p.Loss), options.LogY);
        DrawFrame(canvas, plot, axes, font, titleFont, options);
        if (trainPoints.Count > 0)
        {
            DrawLine(canvas, axes, trainPoints, TrainRaw, 1.2f);
            if (options.Smoothing > 0 && trainPoints.Count > 2)
                DrawLine(canvas, axes, MovingAverage(trainPoints, options.Smoothing, options.LogY), TrainSmooth, 2.2f);
        }
        if (evalPoints.Count > 0)
        {
            DrawLine(canvas, axes, evalPoints, Eval, 1.8f);
            using var marker = new SKPaint { Color = Eval, IsAntialias = true, Style = SKPaintStyle.Fill };
            foreach (var p in evalPoints) canvas.DrawCircle(axes.X(p.Step), axes.Y(p.Loss), 3.5f, marker);
        }
        DrawLegend(canvas, plot, font, options, trainPoints.Count > 0, evalPoints.Count > 0);
        canvas.Flush();
        return RgbImage.FromOpaqueBitmap(bitmap);
    }

    private static List<(int Step, double Loss)> Usable(IReadOnlyList<(int Step, double Loss)> points, bool logY) =>
        points.Where(p => double.IsFinite(p.Loss) && (!logY || p.Loss > 0)).OrderBy(p => p.Step).ToList();

    /// <summary>Exponential moving average (in log space on a log axis), bias-corrected at the start.</summary>
    private static List<(int Step, double Loss)> MovingAverage(List<(int Step, double Loss)> points, double beta, bool logY)
    {
        var smoothed = new List<(int, double)>(points.Count);
        double average = 0, weight = 0;
        foreach (var (step, loss) in points)
        {
            double v = logY ? Math.Log(loss) : loss;
            average = beta * average + (1 - beta) * v;
            weight = beta * weight + (1 - beta);
            double corrected = average / weight;
            smoothed.Add((step, logY ? Math.Exp(corrected) : corrected));
        }
        return smoothed;
    }

    private sealed class Axes
    {
        private readonly SKRect _plot;
        private readonly double _x0, _x1, _y0, _y1;
        public bool LogY { get; }
        public double MinStep { get; }
        public double MaxStep { get; }
        public double MinLoss { get; }
        public double MaxLoss { get; }

        public Axes(SKRect plot, double minStep, double maxStep, double minLoss, double maxLoss, bool logY)
        {
            _plot = plot;
            LogY = logY;
            (MinStep, MaxStep, MinLoss, MaxLoss) = (minStep, maxStep, minLoss, maxLoss);
            _x0 = minStep;
            _x1 = maxStep > minStep ? maxStep : minStep + 1;
            double lo = logY ? Math.Log10(minLoss) : minLoss, hi = logY ? Math.Log10(maxLoss) : maxLoss;
            double pad = hi > lo ? 0.05 * (hi - lo) : Math.Max(Math.Abs(lo) * 0.1, 0.1);
            (_y0, _y1) = (lo - pad, hi + pad);
        }

        public float X(double step) => (float)(_plot.Left + (step - _x0) / (_x1 - _x0) * _plot.Width);

        public float Y(double loss)
        {
            double v = LogY ? Math.Log10(loss) : loss;
            return (float)(_plot.Bottom - (v - _y0) / (_y1 - _y0) * _plot.Height);
        }

        public double LossAtFraction(double f) => LogY
            ? Math.Pow(10, Math.Log10(MinLoss) + f * (Math.Log10(MaxLoss) - Math.Log10(MinLoss)))
            : MinLoss + f * (MaxLoss - MinLoss);
    }

    private static void DrawFrame(SKCanvas canvas, SKRect plot, Axes axes, SKFont? font, SKFont? titleFont, LossCurveOptions options)
    {
        using var gridPaint = new SKPaint { Color = Grid, StrokeWidth = 1, IsAntialias = false };
        using var axisPaint = new SKPaint { Color = Axis, StrokeWidth = 1.2f, IsAntialias = true, Style = SKPaintStyle.Stroke };
        using var textPaint = new SKPaint { Color = Axis, IsAntialias = true };

        double[] fractions = axes.MinLoss < axes.MaxLoss ? [0, 0.5, 1] : [0];
        foreach (var f in fractions)
        {
            double loss = axes.LossAtFraction(f);
            float y = axes.Y(loss);
            canvas.DrawLine(plot.Left, y, plot.Right, y, gridPaint);
            if (font != null) canvas.DrawText(FormatLoss(loss), plot.Left - 6, y + font.Size / 3, SKTextAlign.Right, font, textPaint);
        }
        double[] steps = axes.MaxStep > axes.MinStep ? [axes.MinStep, Math.Round((axes.MinStep + axes.MaxStep) / 2), axes.MaxStep] : [axes.MinStep];
        foreach (var s in steps)
        {
            float x = axes.X(s);
            canvas.DrawLine(x, plot.Top, x, plot.Bottom, gridPaint);
            if (font != null) canvas.DrawText(s.ToString("0", CultureInfo.InvariantCulture), x, plot.Bottom + font.Size + 4, SKTextAlign.Center, font, textPaint);
        }
        canvas.DrawRect(plot, axisPaint);
        if (font != null) canvas.DrawText("step", plot.MidX, options.Height - 6, SKTextAlign.Center, font, textPaint);
        if (titleFont != null)
            canvas.DrawText(options.Title + (options.LogY ? " (log scale)" : ""), plot.Left, plot.Top - 10, SKTextAlign.Left, titleFont, textPaint);
    }

    private static string FormatLoss(double loss) =>
        loss != 0 && (Math.Abs(loss) < 1e-3 || Math.Abs(loss) >= 1e4)
            ? loss.ToString("0.00e0", CultureInfo.InvariantCulture)
            : loss.ToString("G4", CultureInfo.InvariantCulture);

    private static void DrawLine(SKCanvas canvas, Axes axes, List<(int Step, double Loss)> points, SKColor color, float width)
    {
        using var paint = new SKPaint { Color = color, StrokeWidth = width, IsAntialias = true, Style = SKPaintStyle.Stroke, StrokeJoin = SKStrokeJoin.Round };
        if (points.Count == 1)
        {
            canvas.DrawCircle(axes.X(points[0].Step), axes.Y(points[0].Loss), width + 1, paint);
            return;
        }
        using var path = new SKPath();
        path.MoveTo(axes.X(points[0].Step), axes.Y(points[0].Loss));
        for (int i = 1; i < points.Count; i++) path.LineTo(axes.X(points[i].Step), axes.Y(points[i].Loss));
        canvas.DrawPath(path, paint);
    }

    private static void DrawLegend(SKCanvas canvas, SKRect plot, SKFont? font, LossCurveOptions options, bool hasTrain, bool hasEval)
    {
        if (font == null) return;
        using var textPaint = new SKPaint { Color = Axis, IsAntialias = true };
        float y = plot.Top + 18;
        foreach (var (show, label, color) in new[] { (hasTrain, options.TrainLabel, TrainSmooth), (hasEval, options.EvalLabel, Eval) })
        {
            if (!show) continue;
            float textWidth = font.MeasureText(label);
            float x = plot.Right - 12 - textWidth;
            using var swatch = new SKPaint { Color = color, StrokeWidth = 2.5f, IsAntialias = true };
            canvas.DrawLine(x - 28, y - font.Size / 3, x - 6, y - font.Size / 3, swatch);
            canvas.DrawText(label, x, y, SKTextAlign.Left, font, textPaint);
            y += font.Size + 6;
        }
    }
}
