#!/usr/bin/python3
"""Writes the PIL-made reference images the Images tests compare against.

Run with Debian bookworm's Python and Pillow (apt-get install python3-pil python3-numpy):
    /usr/bin/python3 make_references.py
Everything here is produced by Pillow (the library the diffusers DreamBooth scripts resize with,
through torchvision's Resize on PIL images) from images defined by formulas below.
"""
import json
import math

import numpy as np
import PIL
from PIL import Image, ImageOps


def source(w, h):
    """Gradients, a checkerboard and a disc: edges and smooth areas for a resampler to get wrong."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 255 * x / (w - 1)
    g = 255 * y / (h - 1)
    b = np.where(((x // 4) + (y // 4)) % 2 == 0, 230.0, 20.0)
    disc = (x - w * 0.6) ** 2 + (y - h * 0.4) ** 2 < (min(w, h) * 0.3) ** 2
    r = np.where(disc, 255 - r, r)
    g = np.where(disc, 40.0, g)
    rgb = np.stack([r, g, b], axis=-1).round().clip(0, 255).astype(np.uint8)
    return Image.fromarray(rgb, "RGB")


def torchvision_resize_short_side(img, size):
    """torchvision.transforms.Resize(size) on a PIL image (v0.15): short side -> size, long side int(size*long/short)."""
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    return img.resize((new_w, new_h), Image.BILINEAR)


def torchvision_center_crop(img, size):
    w, h = img.size
    top = int(round((h - size) / 2.0))
    left = int(round((w - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


manifest = {"pillow": PIL.__version__, "numpy": np.__version__, "files": {}}

src = source(97, 61)
src.save("source_97x61.png")
manifest["files"]["source_97x61.png"] = "source(97, 61)"
filters = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "lanczos": Image.LANCZOS}
for name, f in filters.items():
    for (w, h) in [(40, 25), (150, 94), (97, 30)]:
        out = f"resize_{name}_{w}x{h}.png"
        src.resize((w, h), f).save(out)
        manifest["files"][out] = f"source_97x61.png .resize(({w}, {h}), {name})"

# DreamBooth preprocessing: Resize(32, BILINEAR) then CenterCrop(32).
crop = torchvision_center_crop(torchvision_resize_short_side(src, 32), 32)
crop.save("dreambooth_center_32.png")
manifest["files"]["dreambooth_center_32.png"] = "torchvision Resize(32, BILINEAR) + CenterCrop(32) of source_97x61.png (formulas of torchvision 0.15)"

# EXIF orientation: an asymmetric 48x32 picture stored with each orientation tag; the expected upright
# picture is what ImageOps.exif_transpose makes of the decoded JPEG.
quad = np.zeros((32, 48, 3), np.uint8)
quad[:16, :24] = (220, 30, 30)
quad[:16, 24:] = (30, 200, 40)
quad[16:, :24] = (40, 60, 220)
quad[16:, 24:] = (240, 230, 40)
quad[2:6, 2:10] = (255, 255, 255)
quad_img = Image.fromarray(quad, "RGB")
for orientation in range(1, 9):
    exif = Image.Exif()
    exif[0x0112] = orientation
    jpg = f"orientation_{orientation}.jpg"
    quad_img.save(jpg, quality=95, exif=exif.tobytes(), subsampling=0)
    upright = ImageOps.exif_transpose(Image.open(jpg)).convert("RGB")
    upright.save(f"orientation_{orientation}_upright.png")
    manifest["files"][jpg] = f"48x32 quadrants, EXIF Orientation={orientation}, quality 95, 4:4:4"
    manifest["files"][f"orientation_{orientation}_upright.png"] = f"ImageOps.exif_transpose(open('{jpg}'))"

# Transparency: RGBA with an alpha ramp, and PIL's composite over white and over black.
y, x = np.mgrid[0:20, 0:30]
rgba = np.zeros((20, 30, 4), np.uint8)
rgba[..., 0] = 200
rgba[..., 1] = (x * 8).astype(np.uint8)
rgba[..., 2] = 50
rgba[..., 3] = (y * 13).clip(0, 255).astype(np.uint8)
rgba_img = Image.fromarray(rgba, "RGBA")
rgba_img.save("alpha_ramp.png")
for bg_name, bg in [("white", (255, 255, 255, 255)), ("black", (0, 0, 0, 255))]:
    Image.alpha_composite(Image.new("RGBA", rgba_img.size, bg), rgba_img).convert("RGB").save(f"alpha_ramp_over_{bg_name}.png")
    manifest["files"][f"alpha_ramp_over_{bg_name}.png"] = f"Image.alpha_composite(Image.new('RGBA', size, {bg}), alpha_ramp).convert('RGB')"

gray = Image.fromarray((np.add.outer(np.arange(16) * 7, np.arange(24) * 5) % 256).astype(np.uint8), "L")
gray.save("gray_24x16.png")
gray.convert("RGB").save("gray_24x16_rgb.png")
manifest["files"]["gray_24x16.png"] = "8-bit grayscale"
manifest["files"]["gray_24x16_rgb.png"] = "gray_24x16.png .convert('RGB')"

with open("manifest.json", "w") as f:
    json.dump(manifest, f, indent=1, sort_keys=True)
    f.write("\n")
