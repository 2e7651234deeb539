"""PyTorch timing of the optimisation `adain optimize --json` times (Gatys et al.).

The same objective (scripts/make_optimize_fixtures.py `Gatys`: content MSE at relu4_1,
Gram MSE over relu1_1..relu4_1, on the VGG of make_fixtures.py and the same weights
file), the same images prepared the same way (shorter side resized to SIZE with
bicubic, as `--size`), torch.optim.LBFGS(lr=1, max_iter=ITERS, history_size=100,
line_search_fn="strong_wolfe") in one .step() with the pixels clamped in the
closure, float32 on the CPU with --threads threads. Prints one JSON line:
{"size": [w, h], "iterations", "evals", "seconds", "secs_per_iter", "secs_per_eval",
"iters_per_sec", "threads"} (seconds exclude loading and the encoding of the targets).

Compare with, in the same session and with the same thread count:
  adain optimize -c C -s S -o /tmp/o.png --overwrite --size 512 --iters 10 --threads 2 --json -q
  .venv/bin/python scripts/bench_optimize_torch.py -c C -s S --size 512 --iters 10 --threads 2
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as ref  # noqa: E402
from make_optimize_fixtures import Gatys  # noqa: E402


def load(path, size):
    img = Image.open(path).convert("RGB")
    w, h = img.size
    if size > 0 and min(w, h) != size:
        s = size / min(w, h)
        w, h = (size, round(h * s)) if w <= h else (round(w * s), size)
        img = img.resize((w, h), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)
    return x.permute(2, 0, 1).unsqueeze(0).contiguous()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-c", "--content", required=True)
    ap.add_argument("-s", "--style", required=True)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--style-weight", type=float, default=10.0)
    ap.add_argument("--line-search", default="strong_wolfe", choices=["strong_wolfe", "none"])
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    content, style = load(a.content, a.size), load(a.style, a.size)
    os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    vgg = ref.load_vgg()
    obj = Gatys(vgg, content, style, content_layer=3, cw=1.0, sw=a.style_weight,
                lw=[1.0] * 4, tvw=0.0)
    x = content.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([x], lr=1, max_iter=a.iters, history_size=100,
                            line_search_fn=None if a.line_search == "none" else a.line_search)
    evals = [0]

    def closure():
        with torch.no_grad():
            x.clamp_(0, 1)
        opt.zero_grad()
        loss = obj.terms(x)[3]
        loss.backward()
        evals[0] += 1
        return loss

    # one untimed evaluation first, as `adain optimize` evaluates the initial losses
    # before its clock starts
    closure()
    x.grad = None
    evals[0] = 0
    t = time.perf_counter()
    opt.step(closure)
    secs = time.perf_counter() - t
    iters = opt.state[x]["n_iter"]
    print(json.dumps({
        "size": [content.shape[3], content.shape[2]],
        "iterations": iters,
        "evals": evals[0],
        "seconds": secs,
        "secs_per_iter": secs / max(iters, 1),
        "secs_per_eval": secs / max(evals[0], 1),
        "iters_per_sec": iters / secs,
        "threads": a.threads,
    }))


if __name__ == "__main__":
    main()
