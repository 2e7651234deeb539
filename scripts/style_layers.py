"""Where a stylized video's style_musigma comes from: its two terms (MSE of the
per-channel means, MSE of the stds, against the style's) at each of
relu1_1..relu4_1, averaged over 8 frames spread over the video, and the
output's std relative to the style's. A diagnosis aid for the temporal modes
(issue 17): a blend that loses contrast shows in the stds, one that changes
which patterns appear shows in the means.

  .venv/bin/python scripts/style_layers.py --style data/eval/style/styleid_wikiart_03.png \
      runs/clip/none.mp4 runs/clip/flow.mp4
"""
import argparse
import os
import subprocess
import sys

import cv2
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as mf  # noqa: E402


def frames(path, samples):
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                          "stream=width,height", "-of", "csv=p=0", path],
                         capture_output=True, text=True, check=True).stdout.strip().split(",")
    w, h = int(out[0]), int(out[1])
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", path, "-f", "rawvideo", "-pix_fmt",
                          "rgb24", "-"], capture_output=True, check=True).stdout
    a = np.frombuffer(raw, np.uint8).reshape(-1, h, w, 3)
    n = len(a)
    return [a[(2 * k + 1) * n // (2 * samples)] for k in range(samples)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--style", required=True)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("videos", nargs="+")
    a = ap.parse_args()
    torch.set_num_threads(2)
    vgg = mf.load_vgg()

    def stats(img):
        x = torch.from_numpy(img.astype(np.float32) / 255).permute(2, 0, 1)[None]
        with torch.no_grad():
            return [(f.mean((2, 3))[0], f.std((2, 3))[0]) for f in mf.encode_all(vgg, x)]

    st = cv2.cvtColor(cv2.imread(a.style), cv2.COLOR_BGR2RGB)
    h, w = st.shape[:2]
    k = 512 / min(h, w)
    s = stats(cv2.resize(st, (round(w * k), round(h * k)), interpolation=cv2.INTER_AREA))
    print("video: mean term | std term (relu1_1 relu2_1 relu3_1 relu4_1) | std / style's std")
    for v in a.videos:
        fs = [stats(f) for f in frames(v, a.samples)]

        def avg(fn):
            return [np.mean([fn(f[l], s[l]) for f in fs]) for l in range(4)]
        mu = avg(lambda o, t: ((o[0] - t[0]) ** 2).mean().item())
        sd = avg(lambda o, t: ((o[1] - t[1]) ** 2).mean().item())
        ratio = avg(lambda o, t: (o[1].sum() / t[1].sum()).item())
        print(f"{os.path.basename(v)}: " + " ".join(f"{x:.3g}" for x in mu) + " | "
              + " ".join(f"{x:.3g}" for x in sd) + " | " + " ".join(f"{x:.2f}" for x in ratio))


if __name__ == "__main__":
    main()
