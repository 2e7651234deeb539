"""PyTorch timings of the same work `adain bench` and `adain-train bench` time.

Uses the reference reimplementation in make_fixtures.py (same layers, same
weights file); prints one JSON object. Run through scripts/bench.sh, which runs
both sides in the same session and prints the ratios.
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as ref  # noqa: E402


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def timed(fn, repeat):
    fn()  # warm-up
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return median(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sizes", default="256,512")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--crop-size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--no-train", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    vgg = ref.load_vgg()
    dec = ref.load_decoder(0.003)
    res = {}
    for s in [int(x) for x in a.sizes.split(",")]:
        c, st = torch.rand(1, 3, s, s), torch.rand(1, 3, s, s)

        def stylize():
            with torch.no_grad():
                t = ref.adain(ref.encode(vgg, c), ref.encode(vgg, st))
                return dec(t).sum().item()

        res[f"stylize_{s}"] = timed(stylize, a.repeat)
    if not a.no_train:
        for p in vgg.parameters():
            p.requires_grad_(False)
        opt = torch.optim.Adam(dec.parameters(), lr=1e-4)
        b, s = a.batch_size, a.crop_size
        c, st = torch.rand(b, 3, s, s), torch.rand(b, 3, s, s)

        def step():
            with torch.no_grad():
                sf = ref.encode_all(vgg, st)
                t = ref.adain(ref.encode(vgg, c), sf[-1])
            g = dec(t)
            gf = ref.encode_all(vgg, g)
            lc = torch.nn.functional.mse_loss(gf[-1], t)
            ls = 0
            for x, y in zip(gf, sf):
                (xm, xs), (ym, ys) = ref.calc_mean_std(x), ref.calc_mean_std(y)
                ls = ls + torch.nn.functional.mse_loss(xm, ym) + torch.nn.functional.mse_loss(xs, ys)
            opt.zero_grad()
            (lc + 50.0 * ls).backward()
            opt.step()

        res[f"train_step_b{b}_{s}"] = timed(step, a.steps)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
