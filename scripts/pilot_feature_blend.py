"""Pilot (not product code): `--temporal flow`'s blend moved from pixels to
the decoder's input. Each frame's AdaIN target (relu4_1, content statistics
smoothed by the same EMA as `stats`) is mixed with the previous frame's mixed
target, warped along DIS flow brought down to the feature grid (flow averaged
over each 8x8 block, divided by 8; trust = the share of forward-backward
consistent pixels in the block), then decoded: the decoder draws one texture
instead of two being averaged. `--restd` restores the mixed target's
per-channel mean/std to the unmixed one's (the style's) before decoding.

Score the output with `adain eval-video` (README "Video", issue 17 note):
  .venv/bin/python scripts/pilot_feature_blend.py --clip runs/clip-motion0.25/sub96.mp4 \
      --strength 0.35 --out runs/pilot-feature/f35.mp4
  target/release/adain eval-video --input runs/clip-motion0.25/sub96.mp4 \
      --output runs/pilot-feature/f35.mp4 --style data/eval/style/styleid_wikiart_03.png
"""
import argparse
import os
import subprocess
import sys

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as mf  # noqa: E402

EMA = 0.9  # src/video/temporal.rs EMA_MOMENTUM


def probe(path):
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                          "stream=width,height,r_frame_rate", "-of", "csv=p=0", path],
                         capture_output=True, text=True, check=True).stdout.strip().split(",")
    return int(out[0]), int(out[1]), out[2]


def consistency(b, f):
    """1 where the backward flow b comes back along the forward flow f
    (|b + f|^2 <= 0.01 (|b|^2 + |f|^2) + 0.5, as src/video/flow.rs)."""
    h, w = b.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    tx, ty = xs + b[..., 0], ys + b[..., 1]
    fs = cv2.remap(f, tx, ty, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    ok = (tx >= 0) & (ty >= 0) & (tx <= w - 1) & (ty <= h - 1)
    ok &= ((b + fs) ** 2).sum(-1) <= 0.01 * ((b ** 2).sum(-1) + (fs ** 2).sum(-1)) + 0.5
    return ok.astype(np.float32)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clip", required=True)
    ap.add_argument("--style", default="data/eval/style/styleid_wikiart_03.png")
    ap.add_argument("--decoder", default="weights/decoder.safetensors")
    ap.add_argument("--strength", type=float, default=0.35)
    ap.add_argument("--restd", action="store_true")
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    w, h, rate = probe(a.clip)
    if w % 8 or h % 8:
        sys.exit(f"{a.clip}: {w}x{h}: the pilot takes sides that are multiples of 8")
    vgg = mf.load_vgg()
    dec = mf.make_decoder()
    dec.load_state_dict({k: v.float() for k, v in load_file(a.decoder).items()})
    dec.eval()
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", a.clip, "-f", "rawvideo",
                          "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    frames = np.frombuffer(raw, np.uint8).reshape(-1, h, w, 3)
    st = cv2.cvtColor(cv2.imread(a.style), cv2.COLOR_BGR2RGB)
    sh, sw = st.shape[:2]
    k = 512 / min(sh, sw)
    st = cv2.resize(st, (round(sw * k), round(sh * k)), interpolation=cv2.INTER_AREA)

    def tensor(im):
        return torch.from_numpy(im.astype(np.float32) / 255).permute(2, 0, 1)[None]

    with torch.no_grad():
        sm, ss = mf.calc_mean_std(mf.encode(vgg, tensor(st)))
    dis = cv2.DISOpticalFlow_create(cv2.DISOpticalFlow_PRESET_MEDIUM)

    def gray(im):
        return cv2.cvtColor(im, cv2.COLOR_RGB2GRAY)

    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    enc = subprocess.Popen(["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
                            "-s", f"{w}x{h}", "-r", rate, "-i", "-", "-c:v", "libx264", "-crf", "18",
                            "-pix_fmt", "yuv420p", a.out], stdin=subprocess.PIPE)
    ema, prev = None, None
    with torch.no_grad():
        for i, fr in enumerate(frames):
            c = mf.encode(vgg, tensor(fr))
            cm, cs = mf.calc_mean_std(c)
            ema = (cm, cs) if ema is None else (EMA * ema[0] + (1 - EMA) * cm,
                                                EMA * ema[1] + (1 - EMA) * cs)
            t = (c - ema[0]) / ema[1] * ss + sm
            if prev is not None and a.strength > 0:
                prev_in, prev_t = prev
                b = dis.calc(gray(fr), gray(prev_in), None)
                f = dis.calc(gray(prev_in), gray(fr), None)
                trust = consistency(b, f)
                fh, fw = t.shape[2:]
                bf = b.reshape(fh, 8, fw, 8, 2).mean((1, 3)) / 8
                tf = trust.reshape(fh, 8, fw, 8).mean((1, 3))
                ys, xs = np.mgrid[0:fh, 0:fw].astype(np.float32)
                grid = np.stack([(xs + bf[..., 0]) / (fw - 1) * 2 - 1,
                                 (ys + bf[..., 1]) / (fh - 1) * 2 - 1], -1)
                warped = F.grid_sample(prev_t, torch.from_numpy(grid)[None], mode="bilinear",
                                       padding_mode="border", align_corners=True)
                mixed = t + torch.from_numpy(a.strength * tf)[None, None] * (warped - t)
                if a.restd:
                    bm, bs = mf.calc_mean_std(mixed)
                    tm, ts = mf.calc_mean_std(t)
                    mixed = (mixed - bm) / bs * ts + tm
                t = mixed
            prev = (fr, t)
            o = dec(t).clamp(0, 1)[0].permute(1, 2, 0).numpy()
            enc.stdin.write((o * 255).round().astype(np.uint8).tobytes())
            print(f"frame {i + 1}/{len(frames)}", end="\r", flush=True)
    enc.stdin.close()
    if enc.wait() != 0:
        sys.exit("ffmpeg failed")
    print(f"\nwrote {a.out}")


if __name__ == "__main__":
    main()
