"""Expected bucket lists and assignments for AspectBucketTests, worked from kohya's published algorithm
(sd-scripts library/model_util.py make_bucket_resolutions, library/train_util.py BucketManager.select_bucket) as
described in its documentation and code comments; written independently of CudaDream's C# (run: python3 kohya_buckets.py)."""
import math

def predefined(base, lo=256, hi=1024, step=64):
    area = base * base
    out = {(int(math.sqrt(area) // step) * step,) * 2}
    for w in range(lo, hi + 1, step):
        h = min(hi, (area // w) // step * step)
        if h >= lo:
            out |= {(w, h), (h, w)}
    return sorted(out)

def select(resos, iw, ih):
    ar = iw / ih
    if (iw, ih) in resos:
        b = (iw, ih)
    else:
        errs = [abs(w / h - ar) for w, h in resos]
        b = resos[errs.index(min(errs))]  # first minimum, as numpy argmin
    scale = b[1] / ih if ar > b[0] / b[1] else b[0] / iw
    return b, (int(iw * scale + 0.5), int(ih * scale + 0.5))

def select_no_upscale(base, iw, ih, step=64):
    area = base * base
    ar = iw / ih
    rnd = lambda x: int(x + 0.5) - int(x + 0.5) % step
    if iw * ih > area:
        rw = math.sqrt(area * ar); rh = area / rw
        bw = rnd(rw); bh_w = rnd(bw / ar)
        bh = rnd(rh); bw_h = rnd(bh * ar)
        if abs(bw / bh_w - ar) < abs(bw_h / bh - ar):
            size = (bw, int(bw / ar + 0.5))
        else:
            size = (int(bh * ar + 0.5), bh)
    else:
        size = (iw, ih)
    return (size[0] - size[0] % step, size[1] - size[1] % step), size

sizes = [(512, 512), (1024, 768), (768, 1024), (640, 480), (1920, 1080), (600, 800), (300, 900), (2000, 500), (512, 768), (100, 100), (1000, 999)]
print("buckets", predefined(512))
for s in sizes:
    print(s, "->", select(predefined(512), *s), "| no_upscale ->", select_no_upscale(512, *s))
