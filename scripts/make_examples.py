#!/usr/bin/env python3
"""Make the two quick-start pictures in examples/ (see examples/README.md).

    examples/photo.jpg     "Chelsea the cat", a photograph shipped in the
                           scikit-image wheel (skimage/data/chelsea.png, CC0),
                           shorter side resized to 320 px (Lanczos), JPEG q90.
    examples/painting.jpg  an original abstract "painting" drawn here from a
                           fixed seed (swirling brush strokes on a coloured
                           underpainting), 320x320, JPEG q90.

Python is used only to make these files; the Rust crate never runs it.

Get the photo (PyPI is the only source needed; nothing else is downloaded):

    pip download --no-deps scikit-image==0.26.0 -d /tmp/skw
    unzip -o /tmp/skw/scikit_image-0.26.0-*.whl skimage/data/chelsea.png -d /tmp/skw/x

Then, from the repository root (needs Pillow and numpy; a throwaway venv works):

    python3 -m venv /tmp/exvenv && /tmp/exvenv/bin/pip install pillow numpy
    /tmp/exvenv/bin/python scripts/make_examples.py /tmp/skw/x

SOURCE may be the PNG itself, a directory holding skimage/data/chelsea.png (the
unzipped wheel), or the .whl file (the PNG is read straight out of the zip).
`--out DIR` writes somewhere other than examples/. Each output must be under
80 KB; the script fails otherwise.

The painting is deterministic: every random choice comes from
random.Random(SEED), whose sequence Python guarantees across versions. Pixels
may still differ in the last bit between Pillow versions (line rasterising and
the JPEG encoder), which does not change what the picture is.
"""

import argparse
import hashlib
import io
import math
import random
import sys
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

REPO = Path(__file__).resolve().parent.parent
WHEEL_PATH = "skimage/data/chelsea.png"
# sha256 of skimage/data/chelsea.png in scikit_image-0.26.0 (451x300 RGB PNG).
CHELSEA_SHA256 = "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb"

SHORT_SIDE = 320
PAINT_SIZE = 320
QUALITY = 90
MAX_BYTES = 80 * 1024
SEED = 20240611
SUPER = 2  # draw the painting at 2x, then Lanczos down: soft stroke edges

# A strong, slightly Fauvist palette (RGB).
NAVY = (18, 30, 84)
ULTRAMARINE = (36, 64, 168)
COBALT = (58, 120, 206)
TEAL = (22, 140, 140)
VIRIDIAN = (30, 110, 70)
CADMIUM = (250, 200, 40)
ORANGE = (240, 128, 30)
VERMILION = (214, 48, 36)
MAGENTA = (170, 40, 110)
CREAM = (246, 236, 204)


def load_photo_bytes(src: Path) -> bytes:
    if src.is_dir():
        cand = src / WHEEL_PATH
        if not cand.is_file():
            cand = src / "chelsea.png"
        if not cand.is_file():
            sys.exit(f"{src}: no {WHEEL_PATH} (or chelsea.png) inside")
        return cand.read_bytes()
    if src.suffix == ".whl":
        with zipfile.ZipFile(src) as z:
            return z.read(WHEEL_PATH)
    return src.read_bytes()


def make_photo(src: Path, out: Path) -> None:
    data = load_photo_bytes(src)
    digest = hashlib.sha256(data).hexdigest()
    if digest != CHELSEA_SHA256:
        print(f"warning: source sha256 {digest} is not scikit-image 0.26.0's "
              "chelsea.png; examples/README.md describes that file", file=sys.stderr)
    im = Image.open(io.BytesIO(data))
    im.load()
    im = im.convert("RGB")
    w, h = im.size
    s = SHORT_SIDE / min(w, h)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    im = im.resize(size, Image.LANCZOS)
    # No EXIF/ICC/XMP carried over: plain sRGB, orientation as stored (upright).
    im.save(out, "JPEG", quality=QUALITY, optimize=True)


# ---------------------------------------------------------------- painting

def lerp(a, b, t):
    return tuple(int(round(x + (y - x) * t)) for x, y in zip(a, b))


def jitter(c, rng, amount):
    return tuple(max(0, min(255, int(v + rng.uniform(-amount, amount)))) for v in c)


def region_colour(x, y, rng):
    """The composition, in unit coordinates: a yellow sun top-right, a blue
    swirling sky, a red/orange hill band, a green-teal foreground, a dark
    flame-like cypress on the left."""
    sun = math.hypot(x - 0.72, y - 0.24)
    hill = 0.58 + 0.07 * math.sin(x * 7.0 + 0.8) + 0.04 * math.sin(x * 17.0)
    cypress = abs(x - 0.2 - 0.03 * math.sin(y * 14.0)) < 0.07 * (y - 0.12) / 0.88 and y > 0.12
    if cypress:
        return rng.choice([NAVY, VIRIDIAN, NAVY, (10, 50, 40)])
    if sun < 0.11:
        return rng.choice([CADMIUM, CADMIUM, CREAM, ORANGE])
    if sun < 0.17:
        return rng.choice([ORANGE, CADMIUM, VERMILION])
    if y < hill:
        band = (math.sin(x * 9.0 + y * 13.0) + 1) / 2
        return rng.choice([ULTRAMARINE, COBALT, NAVY, lerp(COBALT, CREAM, 0.5)]
                          if band > 0.25 else [CREAM, COBALT, CADMIUM])
    if y < hill + 0.12:
        return rng.choice([VERMILION, ORANGE, MAGENTA, VERMILION])
    return rng.choice([TEAL, VIRIDIAN, CADMIUM, TEAL, ORANGE])


def flow_angle(x, y):
    """Direction of the strokes: two vortices in the sky, gentle waves below."""
    hill = 0.58 + 0.07 * math.sin(x * 7.0 + 0.8)
    if y > hill:
        return 0.35 * math.sin(x * 9.0 + y * 5.0)
    if abs(x - 0.2) < 0.09 and y > 0.12:
        return math.pi / 2 + 0.4 * math.sin(y * 20.0)
    a = 0.15 * math.sin(y * 11.0)
    for cx, cy, r, k in ((0.72, 0.24, 0.30, 1.0), (0.40, 0.34, 0.18, -1.0)):
        dx, dy = x - cx, y - cy
        d = math.hypot(dx, dy)
        if d < r:
            w = (1 - d / r) ** 0.7
            tang = math.atan2(dy, dx) + k * math.pi / 2
            # blend angles via vectors
            vx = (1 - w) * math.cos(a) + w * math.cos(tang)
            vy = (1 - w) * math.sin(a) + w * math.sin(tang)
            a = math.atan2(vy, vx)
    return a


def stroke(draw, rng, x0, y0, colour, width, length, size):
    """A brush stroke: a few bristle lines following the flow field, each
    a slightly different shade, with a darker rim on one side."""
    pts = [(x0, y0)]
    x, y = x0, y0
    step = 2.0 * SUPER
    sign = rng.choice([-1, 1])
    for _ in range(int(length / step)):
        a = flow_angle(x / size, y / size)
        x += sign * math.cos(a) * step
        y += sign * math.sin(a) * step
        pts.append((x, y))
    if len(pts) < 2:
        return
    bristles = max(3, int(width / (1.5 * SUPER)))
    for b in range(bristles):
        off = (b / (bristles - 1) - 0.5) * width
        shade = jitter(colour, rng, 22)
        if b == 0:
            shade = tuple(int(v * 0.7) for v in shade)
        elif b == bristles - 1 and rng.random() < 0.6:
            shade = lerp(shade, CREAM, 0.35)
        line = []
        for i, (px, py) in enumerate(pts):
            j = min(i, len(pts) - 2)
            a = math.atan2(pts[j + 1][1] - pts[j][1], pts[j + 1][0] - pts[j][0])
            taper = 1.0 - 0.5 * abs(2 * i / (len(pts) - 1) - 1) ** 3
            line.append((px - math.sin(a) * off * taper, py + math.cos(a) * off * taper))
        # bristles end at slightly different places, as real ones do
        cut = rng.randint(0, max(0, len(line) // 5))
        line = line[: len(line) - cut] if len(line) - cut >= 2 else line
        draw.line(line, fill=shade, width=max(1, int(1.8 * SUPER)), joint="curve")


def make_painting(out: Path) -> None:
    rng = random.Random(SEED)
    size = PAINT_SIZE * SUPER
    img = Image.new("RGB", (size, size), NAVY)
    draw = ImageDraw.Draw(img)

    # 1) underpainting: big flat patches, so no canvas shows through
    for _ in range(700):
        x, y = rng.uniform(0, size), rng.uniform(0, size)
        r = rng.uniform(10, 26) * SUPER
        c = region_colour(x / size, y / size, rng)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=lerp(c, NAVY, 0.25))

    # 2) broad strokes, then 3) finer strokes on top
    for n, wmin, wmax, lmin, lmax in ((2200, 7, 12, 18, 40), (2600, 4, 7, 10, 26)):
        for _ in range(n):
            x, y = rng.uniform(-4, size + 4), rng.uniform(-4, size + 4)
            c = region_colour(min(max(x / size, 0), 1), min(max(y / size, 0), 1), rng)
            stroke(draw, rng, x, y, c,
                   rng.uniform(wmin, wmax) * SUPER, rng.uniform(lmin, lmax) * SUPER, size)

    img = img.resize((PAINT_SIZE, PAINT_SIZE), Image.LANCZOS)

    # 4) canvas weave and a touch of impasto relief
    a = np.asarray(img).astype(np.float32)
    yy, xx = np.mgrid[0:PAINT_SIZE, 0:PAINT_SIZE].astype(np.float32)
    weave = 1.0 + 0.035 * np.sin(xx * 2.1) * np.sin(yy * 2.1)
    relief = np.asarray(img.convert("L").filter(ImageFilter.EMBOSS)).astype(np.float32)
    a = a * weave[..., None] + (relief[..., None] - 128.0) * 0.25
    img = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    img.save(out, "JPEG", quality=QUALITY, optimize=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", type=Path,
                    help="chelsea.png, the unzipped wheel dir, or the scikit-image .whl")
    ap.add_argument("--out", type=Path, default=REPO / "examples")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    photo, painting = args.out / "photo.jpg", args.out / "painting.jpg"
    make_photo(args.source, photo)
    make_painting(painting)
    bad = False
    for p in (photo, painting):
        n = p.stat().st_size
        with Image.open(p) as im:
            print(f"{p}: {im.size[0]}x{im.size[1]}, {n} bytes")
        if n >= MAX_BYTES:
            print(f"{p}: {n} bytes, over the {MAX_BYTES} byte limit", file=sys.stderr)
            bad = True
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
