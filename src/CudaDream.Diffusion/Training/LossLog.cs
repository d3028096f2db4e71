using System.Globalization;
using CudaDream.Diffusion.Images;

namespace CudaDream.Diffusion.Training;

/// <summary><c>loss.csv</c> (step, loss, lr, eval_loss) appended as training goes, and <c>loss.png</c> drawn from it.</summary>
public sealed class LossLog(string outputDir)
{
    private readonly string _csv = Path.Combine(outputDir, "loss.csv");
    private readonly List<(int Step, double Loss)> _train = new();
    private readonly List<(int Step, double Loss)> _eval = new();
    public IReadOnlyList<(int Step, double Loss)> Eval => _eval;

    public void Reset()
    {
        Engine.Formats.AtomicFile.WriteAllText(_csv, "step,loss,lr,eval_loss\n");
        _train.Clear();
        _eval.Clear();
    }

    /// <summary>Keeps the rows up to <paramref name="step"/> (a resumed run rewrites what came after its checkpoint).</summary>
    public void TruncateAfter(int step)
    {
        if (!File.Exists(_csv)) { Reset(); return; }
        var kept = new List<string> { "step,loss,lr,eval_loss" };
        foreach (var line in File.ReadLines(_csv).Skip(1))
        {
            var f = line.Split(',');
            if (f.Length < 4 || !int.TryParse(f[0], CultureInfo.InvariantCulture, out int s) || s > step) continue;
            kept.Add(line);
            if (double.TryParse(f[1], CultureInfo.InvariantCulture, out var l)) _train.Add((s, l));
            if (double.TryParse(f[3], CultureInfo.InvariantCulture, out var e)) _eval.Add((s, e));
        }
        Engine.Formats.AtomicFile.WriteAllText(_csv, string.Join("\n", kept) + "\n");
    }

    public void Append(int step, double loss, double lr, double? eval)
    {
        _train.Add((step, loss));
        if (eval is double e) _eval.Add((step, e));
        Engine.Formats.AtomicFile.AppendAllText(_csv, string.Create(CultureInfo.InvariantCulture, $"{step},{loss:R},{lr:R},{(eval is double v ? v.ToString("R", CultureInfo.InvariantCulture) : "")}\n"));
    }

    public void WriteCurve()
    {
        if (_train.Count == 0) return;
        LossCurvePlot.Write(Path.Combine(Path.GetDirectoryName(_csv)!, "loss.png"), _train, _eval.Count > 0 ? _eval : null);
    }
}
