"""PyTorch side of scripts/bench-vs-pytorch.sh: the same workloads as `adain bench`
(same architecture and weights file, via the reference reimplementation in
make_fixtures.py), one JSON object per run on the last line:
{name: {median_s, min_s, max_s, runs, peak_rss_mb}}.

Workloads: stylize_S (content + style encode, AdaIN, decode), stylize_cached_S
(style statistics precomputed), train_bB_S (forward, backward, Adam step);
johnson_S (Johnson et al.'s TransformerNet of pytorch/examples fast_neural_style,
one forward pass, 0..1 -> 0..255 and back as `adain stylize --model`) and
johnson_train_bB_S (its perceptual-loss step with our VGG-19 encoder, Adam 1e-3:
the objective of scripts/johnson_torch.py).
--bf16 runs the convolutions under torch.autocast("cpu", torch.bfloat16), which
oneDNN executes on AMX where the CPU has it. --device cuda runs the same work on
the GPU in f32 (each run ends by waiting for the GPU), to set beside
`adain bench --device cuda`.
"""
import argparse
import contextlib
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as ref  # noqa: E402
import johnson_torch as jt  # noqa: E402


def reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_mb():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def measure(fn, runs):
    reset_peak()
    fn()  # warm-up
    sync()
    t = []
    for _ in range(max(runs, 1)):
        s = time.perf_counter()
        fn()
        sync()
        t.append(time.perf_counter() - s)
    t.sort()
    return {"median_s": t[len(t) // 2], "min_s": t[0], "max_s": t[-1], "runs": len(t), "peak_rss_mb": peak_mb()}


def runs_for(side, repeat):
    return min(repeat, 2) if side >= 2048 else min(repeat, 3) if side >= 1024 else repeat


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", required=True, help="comma list of workload names")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--train-steps", type=int, default=2)
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    a = ap.parse_args()
    dev = torch.device(a.device)
    # True f32 on the GPU, as candle's cuBLAS calls do (PyTorch lets cuDNN use
    # TF32 for convolutions by default).
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.set_num_threads(a.threads)
    os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    vgg = ref.load_vgg().to(dev)
    dec = ref.load_decoder(0.003).to(dev)
    cast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if a.bf16 else contextlib.nullcontext
    res = {}
    for name in a.only.split(","):
        if name.startswith("johnson_train_b"):
            b, side = name[len("johnson_train_b"):].split("_")
            b, side = int(b), int(side)
            for p in vgg.parameters():
                p.requires_grad_(False)
            net = jt.TransformerNet().to(dev)
            opt = torch.optim.Adam(net.parameters(), lr=1e-3)
            c, st = torch.rand(b, 3, side, side, device=dev), torch.rand(1, 3, side, side, device=dev)
            with torch.no_grad(), cast():
                grams = [jt.gram_matrix(f.float()) for f in jt.features(vgg, st)]

            def jstep():
                with cast():
                    _, _, _, total = jt.objective(vgg, net, c, grams, weights=(1.0, 1.0, 1.0))
                opt.zero_grad()
                total.float().backward()
                opt.step()

            res[name] = measure(jstep, a.train_steps)
        elif name.startswith("johnson_"):
            side = int(name.rsplit("_", 1)[1])
            net = jt.TransformerNet().to(dev)
            c = torch.rand(1, 3, side, side, device=dev)

            def jwork():
                with torch.no_grad(), cast():
                    return (net(c * 255.0) / 255.0).float().sum().item()

            res[name] = measure(jwork, runs_for(side, a.repeat))
        elif name.startswith("stylize_"):
            side = int(name.rsplit("_", 1)[1])
            c, st = torch.rand(1, 3, side, side, device=dev), torch.rand(1, 3, side, side, device=dev)
            if name.startswith("stylize_cached_"):
                with torch.no_grad(), cast():
                    sf = ref.encode(vgg, st)

                def work():
                    with torch.no_grad(), cast():
                        return dec(ref.adain(ref.encode(vgg, c), sf)).float().sum().item()
            else:

                def work():
                    with torch.no_grad(), cast():
                        return dec(ref.adain(ref.encode(vgg, c), ref.encode(vgg, st))).float().sum().item()

            res[name] = measure(work, runs_for(side, a.repeat))
        elif name.startswith("train_b"):
            b, side = name[len("train_b"):].split("_")
            b, side = int(b), int(side)
            for p in vgg.parameters():
                p.requires_grad_(False)
            opt = torch.optim.Adam(dec.parameters(), lr=1e-4)
            c, st = torch.rand(b, 3, side, side, device=dev), torch.rand(b, 3, side, side, device=dev)

            def step():
                with cast():
                    with torch.no_grad():
                        sf = ref.encode_all(vgg, st)
                        t = ref.adain(ref.encode(vgg, c), sf[-1])
                    g = dec(t)
                    gf = ref.encode_all(vgg, g)
                    lc = torch.nn.functional.mse_loss(gf[-1].float(), t.float())
                    ls = 0
                    for x, y in zip(gf, sf):
                        (xm, xs), (ym, ys) = ref.calc_mean_std(x.float()), ref.calc_mean_std(y.float())
                        ls = ls + torch.nn.functional.mse_loss(xm, ym) + torch.nn.functional.mse_loss(xs, ys)
                opt.zero_grad()
                (lc + 50.0 * ls).backward()
                opt.step()

            res[name] = measure(step, a.train_steps)
        else:
            sys.exit(f"unknown workload {name}")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
