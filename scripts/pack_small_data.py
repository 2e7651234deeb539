"""Pack a training set small enough to travel: every image resized so its
shorter side is SIDE (as adain-train's loader does with --load-size SIDE,
bilinear with antialiasing), saved as JPEG. Used to carry ../shared/data/train
to a lent GPU machine, whose upload is capped at 64 MiB (scripts/gpu-train.sh).
With --load-size and --crop-size equal to SIDE, training on the packed copy
sees the same crops as on the originals, up to JPEG re-encoding.

usage: python3 scripts/pack_small_data.py SRC_DIR DST_DIR [--side 128] [--quality 90] [--every 1]
"""
import argparse
import os
import sys

from PIL import Image

EXTS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--side", type=int, default=128)
    ap.add_argument("--quality", type=int, default=90)
    ap.add_argument("--every", type=int, default=1, help="keep every k-th file (sorted)")
    a = ap.parse_args()
    os.makedirs(a.dst, exist_ok=True)
    names = sorted(n for n in os.listdir(a.src) if os.path.splitext(n)[1].lower() in EXTS)
    kept = skipped = 0
    for n in names[:: a.every]:
        try:
            im = Image.open(os.path.join(a.src, n)).convert("RGB")
        except Exception as e:  # the trainer skips unreadable files too
            print(f"skip {n}: {e}", file=sys.stderr)
            skipped += 1
            continue
        w, h = im.size
        if min(w, h) > a.side:
            s = a.side / min(w, h)
            im = im.resize((max(a.side, round(w * s)), max(a.side, round(h * s))), Image.BILINEAR)
        im.save(os.path.join(a.dst, os.path.splitext(n)[0] + ".jpg"), quality=a.quality)
        kept += 1
    print(f"{a.src}: {kept} packed, {skipped} skipped -> {a.dst}")


if __name__ == "__main__":
    main()
