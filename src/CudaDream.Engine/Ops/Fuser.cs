using CudaDream.Engine.Graph;
using CudaDream.Engine.Tensors;

namespace CudaDream.Engine.Ops;

/// <summary>
/// The pattern recogniser: rewrites the node chains that SD 1.x exporters emit (documented in
/// tests/fixtures/sd-tiny/README.md, "Graph facts") into the fused ops (Linear, GroupNorm, LayerNorm, the activations, Attention, UpsampleNearest, TimestepEmbedding; each in its home).
/// Fusion is an optimisation, never a requirement: every pattern checks its constants, shapes and
/// that no intermediate value is used outside it; anything that does not match runs unfused.
/// Fused nodes are named <c>/module/path/OpName</c> and carry the module path of what they replace.
/// </summary>
public static class Fuser
{
    public static Dictionary<string, int> Run(ComputeGraph g)
    {
        var f = new Rewriter(g);
        var counts = new Dictionary<string, int>
        {
            [MatMulOps.Linear] = f.Each("MatMul", FuseMatMulLinear) + f.Each("Gemm", FuseGemmLinear),
            [TimestepEmbeddingOps.TimestepEmbedding] = f.Each("Sin", FuseTimestepEmbedding),
            [GroupNormOps.GroupNorm] = f.Each("InstanceNormalization", FuseGroupNorm),
            [LayerNormOps.LayerNorm] = f.Each("LayerNormalization", FuseLayerNormalization) + f.Each("ReduceMean", FuseDecomposedLayerNorm),
            [AttentionOps.Attention] = f.Each("Softmax", FuseAttention),
            [ActivationOps.Gelu] = f.Each("Erf", FuseGelu),
            [ActivationOps.Geglu] = f.Each(ActivationOps.Gelu, FuseGeglu),
            [ActivationOps.QuickGelu] = f.Each("Sigmoid", FuseQuickGelu),
            [ActivationOps.Silu] = f.Each("Sigmoid", FuseSilu),
            [ResizeOps.UpsampleNearest] = f.Each("Resize", FuseUpsample),
        };
        counts["GroupNorm+SiLU"] = f.Each(ActivationOps.Silu, FuseGroupNormSilu);
        g.SortTopologically();
        return counts;
    }

    // ---- Linear -------------------------------------------------------------------------

    /// <summary>MatMul(x, W) [+ Add(bias)] with a constant 2-D W (or Transpose(W)) → Linear.</summary>
    private static bool FuseMatMulLinear(Rewriter f, Node mm)
    {
        var x = mm.Input(0);
        var w = mm.Input(1);
        if (x.Rank < 2 || w.Rank != 2) return false;
        long transB = 0;
        var pattern = new List<Node> { mm };
        if (!w.IsConstant)
        {
            // MatMul(x, Transpose(W)) keeps the weight in torch's [out, in] layout (CudaDream's own builder emits this).
            var t = w.Producer;
            if (t is not { Op: "Transpose" } || !t.Input(0).IsConstant || t.Input(0).Rank != 2 || !f.OnlyFeeds(w, mm)) return false;
            var perm = t.Attributes.Ints("perm");
            if (perm != null && !(perm[0] == 1 && perm[1] == 0)) return false;
            w = t.Input(0);
            transB = 1;
            pattern.Add(t);
        }
        var y = mm.Output();
        Value? bias = null;
        if (f.SoleConsumer(y) is { Op: "Add" } add && OtherOperand(add, y) is { } b && b.IsConstant && b.Rank == 1 && b.Shape![0] == y.Shape![^1])
        {
            bias = b;
            pattern.Add(add);
            y = add.Output();
        }
        var fused = new Node(MatMulOps.Linear, ScopedName(mm, "Linear"), new[] { x, w, bias }.Where(v => v != null).Cast<Value?>(), new[] { y },
            new Attributes().Set("transB", transB), mm.Module);
        f.Replace(pattern, fused);
        return true;
    }

    /// <summary>Gemm(x, W, bias) with alpha = beta = 1, no transA, constant W and 1-D bias → Linear.</summary>
    private static bool FuseGemmLinear(Rewriter f, Node gemm)
    {
        var a = gemm.Attributes;
        if (a.Int("transA", 0) != 0 || a.Float("alpha", 1) != 1 || a.Float("beta", 1) != 1) return false;
        var w = gemm.Input(1);
        if (!w.IsConstant) return false;
        var bias = gemm.OptionalInput(2);
        if (bias != null && (!bias.IsConstant || bias.Rank != 1)) return false;
        var fused = new Node(MatMulOps.Linear, ScopedName(gemm, "Linear"), new[] { gemm.Input(0), w, bias }.Where(v => v != null).Cast<Value?>(), new[] { gemm.Output() },
            new Attributes().Set("transB", a.Int("transB", 0)), gemm.Module);
        f.Replace(new[] { gemm }, fused);
        return true;
    }

    // ---- Normalisations -------------------------------------------------------------------

    /// <summary>Reshape(x,[N,G,-1]) → InstanceNormalization(1, 0) → Reshape(back) [→ Mul(γ) → Add(β)] → GroupNorm.</summary>
    private static bool FuseGroupNorm(Rewriter f, Node inorm)
    {
        var r1 = inorm.Input(0).Producer;
        if (r1 is not { Op: "Reshape" } || !f.OnlyFeeds(r1.Output(), inorm)) return false;
        var x = r1.Input(0);
        if (x.Rank < 3) return false;
        int n = x.Shape![0], c = x.Shape[1];
        var grouped = r1.Output().Shape!;
        if (grouped.Length != 3 || grouped[0] != n || c % grouped[1] != 0) return false;
        int groups = grouped[1];
        if (Specializer.Uniform(inorm.Input(1)) != 1.0 || Specializer.Uniform(inorm.Input(2)) != 0.0) return false;
        var r2 = f.SoleConsumer(inorm.Output());
        if (r2 is not { Op: "Reshape" } || !Shapes.Equal(r2.Output().Shape!, x.Shape)) return false;
        var pattern = new List<Node> { r1, inorm, r2 };
        var y = r2.Output();
        Value? gamma = null, beta = null;
        if (f.SoleConsumer(y) is { Op: "Mul" } mul && OtherOperand(mul, y) is { } gm && ChannelVector(f, gm, mul, c, x.Rank, pattern) is { } gv)
        {
            gamma = gv;
            pattern.Add(mul);
            y = mul.Output();
            if (f.SoleConsumer(y) is { Op: "Add" } add && OtherOperand(add, y) is { } bt && ChannelVector(f, bt, add, c, x.Rank, pattern) is { } bv)
            {
                beta = bv;
                pattern.Add(add);
                y = add.Output();
            }
        }
        var fused = new Node(GroupNormOps.GroupNorm, ScopedName(inorm, "GroupNorm"), new[] { x, gamma, beta }, new[] { y },
            new Attributes().Set("groups", groups).Set("epsilon", inorm.Attributes.Float("epsilon", 1e-5f)).Set("silu", 0L), inorm.Module);
        f.Replace(pattern, fused);
        return true;
    }

    /// <summary>
    /// A constant shaped [C,1,...,1] (per-channel affine of NCHW) viewed as [C]; null if it is not one. A reshape of a
    /// [C] weight (CudaDream's builder: Reshape(γ, [C,1,1]); the specializer keeps views of weights) yields the weight
    /// itself, with its name, and joins the pattern.
    /// </summary>
    private static Value? ChannelVector(Rewriter f, Value v, Node consumer, int c, int rank, List<Node> pattern)
    {
        if (v.Producer is { Op: "Reshape" or "Unsqueeze" } view && view.Input(0) is { IsConstant: true, Rank: 1 } w && w.Shape![0] == c
            && IsChannelShape(v.Shape!, c, rank) && f.OnlyFeeds(v, consumer))
        {
            pattern.Add(view);
            return w;
        }
        if (!v.IsConstant || (v.Constant == null && !v.IsWeight) || !IsChannelShape(v.Shape!, c, rank)) return null;
        // A weight whose data was not loaded (inspect) keeps its place with the new shape.
        return new Value(v.Name, v.DType, new[] { c }) { Constant = v.Constant?.Reshape(c), IsWeight = v.IsWeight };
    }

    /// <summary>[C, 1, ..., 1] with rank − 1 dimensions, optionally after leading 1s.</summary>
    private static bool IsChannelShape(int[] s, int c, int rank)
    {
        int lead = s.Length - (rank - 1);
        if (s.Length > rank || (lead == 0 && s.Length == 0)) return false;
        var trimmed = s.SkipWhile((d, i) => i < s.Length - (rank - 1) && d == 1).ToArray();
        return trimmed.Length == rank - 1 && trimmed[0] == c && trimmed.Skip(1).All(d => d == 1);
    }

    /// <summary>opset-17 LayerNormalization over the last axis → LayerNorm.</summary>
    private static bool FuseLayerNormalization(Rewriter f, Node ln)
    {
        var x = ln.Input(0);
        if (Shapes.Axis(ln.Attributes.Int("axis", -1), x.Rank) != x.Rank - 1) return false;
        if (ln.Outputs.Skip(1).Any(o => o.Consumers.Count > 0 || f.IsGraphOutput(o))) return false;
        var fused = new Node(LayerNormOps.LayerNorm, ScopedName(ln, "LayerNorm"), new[] { x, ln.OptionalInput(1), ln.OptionalInput(2) }, new[] { ln.Output() },
            new Attributes().Set("epsilon", ln.Attributes.Float("epsilon", 1e-5f)), ln.Module);
        f.Replace(new[] { ln }, fused);
        return true;
    }

    /// <summary>
    /// The opset-14 decomposition: m = ReduceMean(x,-1); d = x − m; v = ReduceMean(d²,-1);
    /// y = d / √(v + ε) [· γ] [+ β] → LayerNorm.
    /// </summary>
    private static bool FuseDecomposedLayerNorm(Rewriter f, Node mean)
    {
        var x = mean.Input(0);
        if (!IsLastAxisMean(mean, x)) return false;
        var sub = f.SoleConsumer(mean.Output());
        if (sub is not { Op: "Sub" } || sub.Input(0) != x || sub.Input(1) != mean.Output()) return false;
        var d = sub.Output();
        if (d.Consumers.Count != 2 || f.IsGraphOutput(d)) return false;
        var pow = d.Consumers.FirstOrDefault(n => n.Op == "Pow");
        var div = d.Consumers.FirstOrDefault(n => n.Op == "Div");
        if (pow == null || div == null || pow.Input(0) != d || Specializer.Uniform(pow.Input(1)) != 2.0 || div.Input(0) != d) return false;
        var mean2 = f.SoleConsumer(pow.Output());
        if (mean2 is not { Op: "ReduceMean" } || !IsLastAxisMean(mean2, pow.Output())) return false;
        var addEps = f.SoleConsumer(mean2.Output());
        if (addEps is not { Op: "Add" } || OtherOperand(addEps, mean2.Output()) is not { } epsV || Specializer.Uniform(epsV) is not double eps) return false;
        var sqrt = f.SoleConsumer(addEps.Output());
        if (sqrt is not { Op: "Sqrt" } || f.SoleConsumer(sqrt.Output()) != div || div.Input(1) != sqrt.Output()) return false;
        var pattern = new List<Node> { mean, sub, pow, mean2, addEps, sqrt, div };
        var y = div.Output();
        int dim = x.Shape![^1];
        Value? gamma = null, beta = null;
        if (f.SoleConsumer(y) is { Op: "Mul" } mul && OtherOperand(mul, y) is { } gm && gm.IsConstant && gm.Rank == 1 && gm.Shape![0] == dim)
        {
            gamma = gm;
            pattern.Add(mul);
            y = mul.Output();
            if (f.SoleConsumer(y) is { Op: "Add" } add && OtherOperand(add, y) is { } bt && bt.IsConstant && bt.Rank == 1 && bt.Shape![0] == dim)
            {
                beta = bt;
                pattern.Add(add);
                y = add.Output();
            }
        }
        var fused = new Node(LayerNormOps.LayerNorm, ScopedName(mean, "LayerNorm"), new[] { x, gamma, beta }, new[] { y },
            new Attributes().Set("epsilon", (float)eps), mean.Module);
        f.Replace(pattern, fused);
        return true;
    }

    private static bool IsLastAxisMean(Node n, Value x)
    {
        if (n.Op != "ReduceMean" || n.Attributes.Int("keepdims", 1) == 0) return false;
        var axes = ReduceOps.ReduceAxes(n);
        return axes.Length == 1 && axes[0] == x.Rank - 1;
    }

    // ---- Attention --------------------------------------------------------------------------

    /// <summary>
    /// softmax(scale · Q·Kᵀ [+ causal mask]) · V over heads split by Reshape/Transpose/Reshape and merged
    /// back the same way (UNet, CLIP and VAE forms; a scalar Mul on q before the split folds into the scale)
    /// → Attention(q, k, v).
    /// </summary>
    private static bool FuseAttention(Rewriter f, Node softmax)
    {
        var x = softmax.Input(0);
        if (x.Rank != 3 || Shapes.Axis(softmax.Attributes.Int("axis", -1), 3) != 2) return false;
        var pattern = new List<Node> { softmax };
        double scale = 1;
        bool causal = false;
        var logits = x;
        // Optional mask: Reshape([B,h,N,M]) → Add(mask) → Reshape([B·h,N,M]).
        if (logits.Producer is { Op: "Reshape" } r7 && f.OnlyFeeds(logits, softmax) && r7.Input(0).Producer is { Op: "Add" } maskAdd
            && f.OnlyFeeds(r7.Input(0), r7) && maskAdd.Inputs.Count == 2)
        {
            var scores4 = maskAdd.Input(0).Producer?.Op == "Reshape" ? maskAdd.Input(0) : maskAdd.Input(1);
            var mask = OtherOperand(maskAdd, scores4);
            if (scores4.Producer is not { Op: "Reshape" } r6 || mask == null || !f.OnlyFeeds(scores4, maskAdd) || !IsCausalMask(mask, scores4.Shape!)) return false;
            causal = true;
            pattern.AddRange(new[] { r7, maskAdd, r6 });
            logits = r6.Input(0);
        }
        if (logits.Producer is { Op: "Mul" } mul && f.OnlyFeeds(logits, pattern[^1]) && OtherOperand(mul, mul.Input(0).Producer?.Op == "MatMul" ? mul.Input(0) : mul.Input(1)) is { } sc
            && sc.Rank <= 1 && sc.Numel == 1 && Specializer.Uniform(sc) is double s)
        {
            scale *= s;
            pattern.Add(mul);
            logits = mul.Input(0) == sc ? mul.Input(1) : mul.Input(0);
        }
        if (logits.Producer is not { Op: "MatMul" } qk || !f.OnlyFeeds(logits, pattern[^1])) return false;
        pattern.Add(qk);
        var kt = qk.Input(1);
        if (kt.Producer is not { Op: "Transpose" } ktNode || !f.OnlyFeeds(kt, qk)) return false;
        var ktPerm = ktNode.Attributes.Ints("perm");
        if (ktPerm == null || !ktPerm.SequenceEqual(new long[] { 0, 2, 1 })) return false;
        pattern.Add(ktNode);

        var pv = f.SoleConsumer(softmax.Output());
        if (pv is not { Op: "MatMul" } || pv.Input(0) != softmax.Output()) return false;
        pattern.Add(pv);

        var q = HeadSplit(f, qk.Input(0), qk, pattern);
        var k = HeadSplit(f, ktNode.Input(0), ktNode, pattern);
        var v = HeadSplit(f, pv.Input(1), pv, pattern);
        var merged = HeadMerge(f, pv.Output(), pattern);
        if (q == null || k == null || v == null || merged == null) return false;
        int heads = q.Value.heads;
        if (k.Value.heads != heads || v.Value.heads != heads || merged.Value.heads != heads) return false;
        var qIn = q.Value.x;
        // CLIP scales q (after its bias) by 1/√d before splitting heads: fold that into the attention scale.
        if (qIn.Producer is { Op: "Mul" } qMul && f.SoleConsumer(qIn) == q.Value.first && !f.IsGraphOutput(qIn))
        {
            var c = qMul.Input(1).IsConstant ? qMul.Input(1) : qMul.Input(0);
            if (c.IsConstant && c.Numel == 1 && Specializer.Uniform(c) is double qs)
            {
                scale *= qs;
                pattern.Add(qMul);
                qIn = qMul.Input(0) == c ? qMul.Input(1) : qMul.Input(0);
            }
        }
        if (causal && qIn.Shape![1] != k.Value.x.Shape![1]) return false;
        var fused = new Node(AttentionOps.Attention, ScopedName(softmax, "Attention"), new[] { qIn, k.Value.x, v.Value.x }, new[] { merged.Value.y },
            new Attributes().Set("heads", heads).Set("scale", (float)scale).Set("causal", causal ? 1L : 0L), softmax.Module);
        if (!f.PatternIsClosed(pattern, merged.Value.y, new[] { qIn, k.Value.x, v.Value.x })) return false;
        f.Replace(pattern, fused);
        return true;
    }

    /// <summary>x[B,N,h·d] → Reshape[B,N,h,d] → Transpose(0,2,1,3) → Reshape[B·h,N,d]; returns x, h and the first node.</summary>
    private static (Value x, int heads, Node first)? HeadSplit(Rewriter f, Value v3, Node consumer, List<Node> pattern)
    {
        if (v3.Producer is not { Op: "Reshape" } r2 || !f.OnlyFeeds(v3, consumer)) return null;
        var t = r2.Input(0);
        if (t.Producer is not { Op: "Transpose" } tr || !f.OnlyFeeds(t, r2) || !(tr.Attributes.Ints("perm")?.SequenceEqual(new long[] { 0, 2, 1, 3 }) ?? false)) return null;
        var r4 = tr.Input(0);
        if (r4.Producer is not { Op: "Reshape" } r1 || !f.OnlyFeeds(r4, tr)) return null;
        var x = r1.Input(0);
        var s4 = r4.Shape!;
        var s3 = v3.Shape!;
        if (x.Rank != 3 || s4.Length != 4 || s3.Length != 3) return null;
        int b = x.Shape![0], n = x.Shape[1], h = s4[2], d = s4[3];
        if (s4[0] != b || s4[1] != n || h * d != x.Shape[2] || s3[0] != b * h || s3[1] != n || s3[2] != d) return null;
        pattern.AddRange(new[] { r2, tr, r1 });
        return (x, h, r1);
    }

    /// <summary>o[B·h,N,d] → Reshape[B,h,N,d] → Transpose(0,2,1,3) → Reshape[B,N,h·d]; returns the merged value and h.</summary>
    private static (Value y, int heads)? HeadMerge(Rewriter f, Value o3, List<Node> pattern)
    {
        if (f.SoleConsumer(o3) is not { Op: "Reshape" } r1) return null;
        var o4 = r1.Output();
        if (f.SoleConsumer(o4) is not { Op: "Transpose" } tr || !(tr.Attributes.Ints("perm")?.SequenceEqual(new long[] { 0, 2, 1, 3 }) ?? false)) return null;
        if (f.SoleConsumer(tr.Output()) is not { Op: "Reshape" } r2) return null;
        var y = r2.Output();
        var s3 = o3.Shape!;
        var s4 = o4.Shape!;
        if (s4.Length != 4 || y.Rank != 3) return null;
        int b = s4[0], h = s4[1], n = s4[2], d = s4[3];
        if (s3[0] != b * h || s3[1] != n || s3[2] != d || y.Shape![0] != b || y.Shape[1] != n || y.Shape[2] != h * d) return null;
        pattern.AddRange(new[] { r1, tr, r2 });
        return (y, h);
    }

    /// <summary>True when the mask is 0 on and below the diagonal and very negative (≤ −1e4) above, for every broadcast row.</summary>
    private static bool IsCausalMask(Value mask, int[] scoresShape)
    {
        if (mask.Constant == null || Shapes.Broadcast(mask.Shape!, scoresShape) is not { } b || !Shapes.Equal(b, scoresShape)) return false;
        var m = mask.Constant.ToFloat32Array();
        int n = mask.Shape![^2], k = mask.Shape[^1];
        if (n != scoresShape[^2] || k != scoresShape[^1] || n != k) return false;
        for (int blk = 0; blk < m.Length / (n * k); blk++)
            for (int i = 0; i < n; i++)
                for (int j = 0; j < k; j++)
                {
                    float v = m[blk * n * k + i * k + j];
                    // Masked logits only need to vanish under exp: fp32 exports use −3.4e38, fp16 ones −65504.
                    if (j <= i ? v != 0 : v > -1e4f) return false;
                }
        return true;
    }

    // ---- Activations ------------------------------------------------------------------------

    /// <summary>0.5 · x · (1 + erf(x/√2)) (torch's exported form) → Gelu.</summary>
    private static bool FuseGelu(Rewriter f, Node erf)
    {
        var div = erf.Input(0).Producer;
        if (div is not { Op: "Div" } || !f.OnlyFeeds(div.Output(), erf) || !Near(Specializer.Uniform(div.Input(1)), Math.Sqrt(2))) return false;
        var x = div.Input(0);
        var add = f.SoleConsumer(erf.Output());
        if (add is not { Op: "Add" } || !Near(Specializer.Uniform(OtherOperand(add, erf.Output())!), 1)) return false;
        var mulX = f.SoleConsumer(add.Output());
        if (mulX is not { Op: "Mul" } || OtherOperand(mulX, add.Output()) != x) return false;
        var half = f.SoleConsumer(mulX.Output());
        if (half is not { Op: "Mul" } || !Near(Specializer.Uniform(OtherOperand(half, mulX.Output())!), 0.5)) return false;
        var fused = new Node(ActivationOps.Gelu, ScopedName(erf, "Gelu"), new[] { x }, new[] { half.Output() }, null, erf.Module);
        f.Replace(new[] { div, erf, add, mulX, half }, fused);
        return true;
    }

    /// <summary>h · gelu(g) with h, g the two halves of the last axis of one tensor (diffusers GEGLU) → Geglu.</summary>
    private static bool FuseGeglu(Rewriter f, Node gelu)
    {
        var g = gelu.Input(0);
        if (g.Producer is not { Op: "Slice" } sg || !f.OnlyFeeds(g, gelu)) return false;
        var mul = f.SoleConsumer(gelu.Output());
        if (mul is not { Op: "Mul" } || OtherOperand(mul, gelu.Output()) is not { } h || h.Producer is not { Op: "Slice" } sh || !f.OnlyFeeds(h, mul)) return false;
        var a = sg.Input(0);
        if (sh.Input(0) != a) return false;
        int full = a.Shape![^1], half = full / 2;
        if (full % 2 != 0 || !IsLastAxisSlice(sh, a, 0, half) || !IsLastAxisSlice(sg, a, half, full)) return false;
        var fused = new Node(ActivationOps.Geglu, ScopedName(gelu, "Geglu"), new[] { a }, new[] { mul.Output() }, null, gelu.Module);
        f.Replace(new[] { sg, sh, gelu, mul }, fused);
        return true;
    }

    private static bool IsLastAxisSlice(Node slice, Value x, int start, int end)
    {
        var (starts, steps, shape) = LayoutOps.ResolveSlice(slice);
        for (int d = 0; d < x.Rank - 1; d++) if (starts[d] != 0 || steps[d] != 1 || shape[d] != x.Shape![d]) return false;
        return starts[^1] == start && steps[^1] == 1 && shape[^1] == end - start;
    }

    /// <summary>x · σ(1.702 · x) → QuickGelu (CLIP).</summary>
    private static bool FuseQuickGelu(Rewriter f, Node sigmoid)
    {
        var scaled = sigmoid.Input(0);
        if (scaled.Producer is not { Op: "Mul" } m1 || !f.OnlyFeeds(scaled, sigmoid)) return false;
        var c = m1.Input(1).IsConstant ? m1.Input(1) : m1.Input(0);
        var x = m1.Input(0) == c ? m1.Input(1) : m1.Input(0);
        if (!Near(Specializer.Uniform(c), 1.702)) return false;
        var m2 = f.SoleConsumer(sigmoid.Output());
        if (m2 is not { Op: "Mul" } || OtherOperand(m2, sigmoid.Output()) != x) return false;
        var fused = new Node(ActivationOps.QuickGelu, ScopedName(sigmoid, "QuickGelu"), new[] { x }, new[] { m2.Output() }, null, sigmoid.Module);
        f.Replace(new[] { m1, sigmoid, m2 }, fused);
        return true;
    }

    /// <summary>x · σ(x) → Silu.</summary>
    private static bool FuseSilu(Rewriter f, Node sigmoid)
    {
        var x = sigmoid.Input(0);
        var mul = f.SoleConsumer(sigmoid.Output());
        if (mul is not { Op: "Mul" } || OtherOperand(mul, sigmoid.Output()) != x) return false;
        var fused = new Node(ActivationOps.Silu, ScopedName(sigmoid, "Silu"), new[] { x }, new[] { mul.Output() }, null, sigmoid.Module);
        f.Replace(new[] { sigmoid, mul }, fused);
        return true;
    }

    /// <summary>Silu(GroupNorm(x)) where the norm's output feeds nothing else → GroupNorm with silu = 1.</summary>
    private static bool FuseGroupNormSilu(Rewriter f, Node silu)
    {
        var gn = silu.Input(0).Producer;
        if (gn is not { Op: GroupNormOps.GroupNorm } || !f.OnlyFeeds(silu.Input(0), silu) || gn.Attributes.Int("silu", 0) != 0) return false;
        var fused = new Node(GroupNormOps.GroupNorm, gn.Name, gn.Inputs, new[] { silu.Output() }, gn.Attributes.Clone().Set("silu", 1L), gn.Module);
        f.Replace(new[] { gn, silu }, fused);
        return true;
    }

    /// <summary>Resize(nearest, asymmetric, floor) of an NCHW tensor's spatial dims → UpsampleNearest.</summary>
    private static bool FuseUpsample(Rewriter f, Node resize)
    {
        var a = resize.Attributes;
        if (a.String("mode", "nearest") != "nearest" || a.String("coordinate_transformation_mode", "half_pixel") != "asymmetric" || a.String("nearest_mode", "round_prefer_floor") != "floor") return false;
        var x = resize.Input(0);
        var y = resize.Output();
        if (x.Rank != 4 || y.Shape![0] != x.Shape![0] || y.Shape[1] != x.Shape[1]) return false;
        var fused = new Node(ResizeOps.UpsampleNearest, ScopedName(resize, "UpsampleNearest"), new[] { x }, new[] { y },
            new Attributes().Set("size", new long[] { y.Shape[2], y.Shape[3] }), resize.Module);
        f.Replace(new[] { resize }, fused);
        return true;
    }

    /// <summary>
    /// diffusers' get_timestep_embedding: Unsqueeze(t) · freq → [sin, cos] (→ swapped halves = flip_sin_to_cos)
    /// with freq_i = exp(−ln(10000)·i/(half − shift)) → TimestepEmbedding.
    /// </summary>
    private static bool FuseTimestepEmbedding(Rewriter f, Node sin)
    {
        var arg = sin.Input(0);
        if (arg.Producer is not { Op: "Mul" } mul || arg.Consumers.Count != 2 || f.IsGraphOutput(arg)) return false;
        var cos = arg.Consumers.FirstOrDefault(n => n.Op == "Cos");
        if (cos == null) return false;
        var freqV = mul.Input(1).IsConstant ? mul.Input(1) : mul.Input(0);
        var tcol = mul.Input(0) == freqV ? mul.Input(1) : mul.Input(0);
        if (freqV.Constant == null || tcol.Producer is not { Op: "Unsqueeze" } unsq || !f.OnlyFeeds(tcol, mul)) return false;
        var t = unsq.Input(0);
        if (t.Rank != 1 || tcol.Shape!.Length != 2 || tcol.Shape[1] != 1) return false;
        var freq = freqV.Constant.ToFloat64Array();
        int half = freq.Length;
        double? shift = null;
        foreach (var s in new[] { 0.0, 1.0 })
        {
            bool ok = true;
            for (int i = 0; i < half && ok; i++) ok = Math.Abs(freq[i] - Math.Exp(-Math.Log(10000) * i / (half - s))) <= 1e-6 * Math.Max(1, Math.Abs(freq[i]));
            if (ok) { shift = s; break; }
        }
        if (shift == null) return false;
        var cat = f.SoleConsumer(sin.Output());
        if (cat is not { Op: "Concat" } || f.SoleConsumer(cos.Output()) != cat || cat.Inputs.Count != 2 || cat.Input(0) != sin.Output() || cat.Input(1) != cos.Output()) return false;
        var pattern = new List<Node> { unsq, mul, sin, cos, cat };
        var y = cat.Output();
        long flip = 0;
        // flip_sin_to_cos: Concat(Slice(half:), Slice(:half)).
        var slices = y.Consumers;
        if (slices.Count == 2 && slices.All(n => n.Op == "Slice") && !f.IsGraphOutput(y)
            && f.SoleConsumer(slices[0].Output()) is { Op: "Concat" } cat2 && f.SoleConsumer(slices[1].Output()) == cat2 && cat2.Inputs.Count == 2)
        {
            var first = cat2.Input(0).Producer!;
            var second = cat2.Input(1).Producer!;
            if (IsLastAxisSlice(first, y, half, 2 * half) && IsLastAxisSlice(second, y, 0, half))
            {
                pattern.AddRange(new[] { first, second, cat2 });
                y = cat2.Output();
                flip = 1;
            }
        }
        var fused = new Node(TimestepEmbeddingOps.TimestepEmbedding, ScopedName(sin, "TimestepEmbedding"), new[] { t }, new[] { y },
            new Attributes().Set("dim", 2L * half).Set("flip_sin_to_cos", flip).Set("shift", (float)shift.Value).Set("max_period", 10000f), sin.Module);
        if (y.DType != DType.F32) return false;
        f.Replace(pattern, fused);
        return true;
    }

    // ---- helpers ------------------------------------------------------------------------------

    /// <summary>
    /// A pattern's constant, recognised within half precision's rounding (2⁻¹⁰ relative): a model stored in fp16 holds √2 as
    /// 1.4140625, and its GELUs must fuse as the fp32 export's do (the fused op then computes the exact function).
    /// </summary>
    private static bool Near(double? v, double expected) => v is double d && Math.Abs(d - expected) <= HalfRounding * Math.Max(1, Math.Abs(expected));

    private const double HalfRounding = 1.0 / 1024;

    /// <summary>The operand of a binary node that is not <paramref name="v"/> (null when v is not an operand).</summary>
    private static Value? OtherOperand(Node n, Value v) =>
        n.Inputs.Count != 2 ? null : n.Inputs[0] == v ? n.Inputs[1] : n.Inputs[1] == v ? n.Inputs[0] : null;

    /// <summary>/a/b/c/OpType → /a/b/c/<paramref name="op"/>: keeps the module scope of the node it replaces.</summary>
    private static string ScopedName(Node n, string op)
    {
        int slash = n.Name.LastIndexOf('/');
        return slash >= 0 ? n.Name[..(slash + 1)] + op : op;
    }

    /// <summary>Rewrites nodes of the graph in place, keeping the node order valid.</summary>
    private sealed class Rewriter
    {
        private readonly ComputeGraph _g;
        private readonly HashSet<Value> _outputs;

        public Rewriter(ComputeGraph g)
        {
            _g = g;
            _outputs = g.Outputs.ToHashSet();
        }

        public bool IsGraphOutput(Value v) => _outputs.Contains(v);

        public Node? SoleConsumer(Value v) => v.Consumers.Count == 1 && !_outputs.Contains(v) ? v.Consumers[0] : null;

        public bool OnlyFeeds(Value v, Node consumer) => v.Consumers.Count == 1 && v.Consumers[0] == consumer && !_outputs.Contains(v);

        /// <summary>True when every value produced inside the pattern (but the result) is used only inside it.</summary>
        public bool PatternIsClosed(List<Node> pattern, Value result, IEnumerable<Value> inputs)
        {
            var set = pattern.ToHashSet();
            foreach (var n in pattern)
                foreach (var o in n.Outputs)
                    if (o != result && (_outputs.Contains(o) || o.Consumers.Any(c => !set.Contains(c)))) return false;
            return pattern.Distinct().Count() == pattern.Count;
        }

        public int Each(string op, Func<Rewriter, Node, bool> fuse)
        {
            int count = 0;
            foreach (var n in _g.Nodes.Where(n => n.Op == op).ToList())
                if (_g.Nodes.Contains(n) && fuse(this, n)) count++;
            return count;
        }

        /// <summary>Replaces the pattern's nodes by <paramref name="fused"/>, placed where the last of them was.</summary>
        public void Replace(IEnumerable<Node> pattern, Node fused)
        {
            var nodes = pattern.Distinct().ToList();
            int position = nodes.Max(n => _g.Nodes.IndexOf(n));
            foreach (var n in nodes)
                foreach (var i in n.Inputs) i?.Consumers.Remove(n);
            _g.Nodes.Insert(position + 1, fused);
            foreach (var n in nodes) _g.Nodes.Remove(n);
            ComputeGraph.Link(fused);
        }
    }
}
