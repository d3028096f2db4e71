using System.Globalization;
using CudaDream.Diffusion.Images;
using CudaDream.Engine.Formats;

namespace CudaDream.Diffusion.Training;

/// <summary>
/// <c>loss.csv</c> (step, loss, lr, eval_loss, val_loss) appended as training goes, <c>loss.png</c> drawn from it, and —
/// with <c>log_with tensorboard</c> — a TensorBoard event file with the same scalars (loss/train, lr, loss/eval,
/// loss/validation) and the sample grids as images.
/// </summary>
public sealed class LossLog : IDisposable
{
    private const string Header = "step,loss,lr,eval_loss,val_loss";
    private readonly string _csv;
    private readonly List<(int Step, double Loss)> _train = new();
    private readonly List<(int Step, double Loss)> _eval = new();
    private readonly List<(int Step, double Loss)> _validation = new();
    private readonly TensorBoardEventWriter? _tensorBoard;

    public IReadOnlyList<(int Step, double Loss)> Eval => _eval;
    public IReadOnlyList<(int Step, double Loss)> Validation => _validation;
    /// <summary>The event file being written (null without TensorBoard logging).</summary>
    public string? TensorBoardFile => _tensorBoard?.Path;

    public LossLog(string outputDir, string? tensorBoardDir = null)
    {
        _csv = Path.Combine(outputDir, "loss.csv");
        if (tensorBoardDir != null)
        {
            try { _tensorBoard = new TensorBoardEventWriter(tensorBoardDir); }
            catch (Exception e) when (WriteFailedException.IsFileSystemFailure(e)) { throw new WriteFailedException(tensorBoardDir, e); }
        }
    }

    public void Reset()
    {
        AtomicFile.WriteAllText(_csv, Header + "\n");
        _train.Clear();
        _eval.Clear();
        _validation.Clear();
    }

    /// <summary>Keeps the rows up to <paramref name="step"/> (a resumed run rewrites what came after its checkpoint); reads logs without val_loss too.</summary>
    public void TruncateAfter(int step)
    {
        if (!File.Exists(_csv)) { Reset(); return; }
        var kept = new List<string> { Header };
        foreach (var line in File.ReadLines(_csv).Skip(1))
        {
            var f = line.Split(',');
            if (f.Length < 4 || !int.TryParse(f[0], CultureInfo.InvariantCulture, out int s) || s > step) continue;
            kept.Add(f.Length == 4 ? line + "," : line);
            if (double.TryParse(f[1], CultureInfo.InvariantCulture, out var l)) _train.Add((s, l));
            if (double.TryParse(f[3], CultureInfo.InvariantCulture, out var e)) _eval.Add((s, e));
            if (f.Length > 4 && double.TryParse(f[4], CultureInfo.InvariantCulture, out var v)) _validation.Add((s, v));
        }
        AtomicFile.WriteAllText(_csv, string.Join("\n", kept) + "\n");
    }

    public void Append(int step, double loss, double lr, double? eval, double? validation = null)
    {
        _train.Add((step, loss));
        if (eval is double e) _eval.Add((step, e));
        if (validation is double v) _validation.Add((step, v));
        static string Cell(double? x) => x is double d ? d.ToString("R", CultureInfo.InvariantCulture) : "";
        AtomicFile.AppendAllText(_csv, string.Create(CultureInfo.InvariantCulture, $"{step},{loss:R},{lr:R},{Cell(eval)},{Cell(validation)}\n"));
        if (_tensorBoard != null)
        {
            _tensorBoard.AddScalar("loss/train", step, loss);
            _tensorBoard.AddScalar("lr", step, lr);
            if (eval is double te) _tensorBoard.AddScalar("loss/eval", step, te);
            if (validation is double tv) _tensorBoard.AddScalar("loss/validation", step, tv);
        }
    }

    /// <summary>A written image (a sample grid) into the TensorBoard log under <paramref name="tag"/>.</summary>
    public void Image(string tag, int step, string pngPath)
    {
        if (_tensorBoard == null) return;
        var bytes = File.ReadAllBytes(pngPath);
        var image = ImageLoader.Load(pngPath);
        _tensorBoard.AddImage(tag, step, image.Width, image.Height, bytes);
    }

    public void WriteCurve()
    {
        if (_train.Count == 0) return;
        LossCurvePlot.Write(Path.Combine(Path.GetDirectoryName(_csv)!, "loss.png"), _train, _eval.Count > 0 ? _eval : null, validation: _validation.Count > 0 ? _validation : null);
    }

    public void Dispose() => _tensorBoard?.Dispose();
}
