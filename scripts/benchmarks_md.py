"""Formats BENCHMARKS.md from the JSON files scripts/bench-vs-pytorch.sh wrote.
Usage: benchmarks_md.py DIR THREADS COMMAND"""
import datetime
import glob
import json
import os
import platform
import re
import subprocess
import sys

import torch

d, threads, command = sys.argv[1], sys.argv[2], sys.argv[3]
root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def load(kind, p, w):
    f = os.path.join(d, f"{kind}-{p}-{w}.json")
    if not os.path.exists(f) or os.path.getsize(f) == 0:
        return None
    j = json.load(open(f))
    if kind == "adain":
        rows = {r["name"]: r for r in j["rows"]}
        return {**rows.get(w, {}), "_report": j} if w in rows else None
    return j.get(w)


works = []
for f in sorted(glob.glob(os.path.join(d, "adain-f32-*.json"))):
    works.append(os.path.basename(f)[len("adain-f32-"):-5])
order = lambda w: (w.startswith("train"), int(re.findall(r"\d+", w)[-1]), "cached" in w)
works.sort(key=order)

rep = None
for w in works:
    a = load("adain", "bf16", w) or load("adain", "f32", w)
    if a:
        rep = a["_report"]
        break

rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
lock = open(os.path.join(root, "Cargo.lock")).read()
candle = re.search(r'name = "candle-core"\nversion = "([^"]+)"', lock).group(1)
mem = ""
try:
    kb = int(re.search(r"MemTotal:\s+(\d+)", open("/proc/meminfo").read()).group(1))
    mem = f", {kb / 1024 / 1024:.0f} GiB"
except OSError:
    pass


def s(x):
    return "-" if x is None else f"{x:.2f}" if x < 100 else f"{x:.0f}"


def ratio(a, b):
    return "-" if a is None or b is None else f"**{a / b:.2f}x**"


out = []
out.append("# Benchmarks: adain vs PyTorch, same machine, same run\n")
out.append(f"Written by `{command.strip()}` on {datetime.date.today()}; every figure below comes from that run.")
out.append("Each workload ran in its own process, adain and PyTorch interleaved, both with the same thread count,")
out.append("the same VGG-19 weights file and the same decoder architecture (a formula decoder: weights do not change the timing).\n")
out.append(f"- Machine: {rep['cpu'] if rep else platform.processor()}, {os.cpu_count()} cores{mem}; threads: {threads}")
out.append(f"- adain: {rustc}, candle-core {candle}; PyTorch {torch.__version__} (CPU)")
if rep:
    bf = rep.get("peak_bf16_gflop_per_s")
    out.append(f"- Measured matrix-multiply peak (by `adain bench`): f32 {rep['peak_f32_gflop_per_s']:.0f} GFLOP/s (2048^3 matmul)"
               + (f", bf16 on AMX {bf:.0f} GFLOP/s (512-channel 64x64 conv)" if bf else ", no AMX"))
out.append("- Times are medians of several runs after a warm-up (2 runs at 2048, 3 at 1024); `min-max` in the detail table.")
out.append("- bf16: adain `--precision bf16` (bf16 products, f32 sums on AMX); PyTorch `torch.autocast(\"cpu\", torch.bfloat16)` (oneDNN).\n")

out.append("## Times (seconds) and ratios\n")
out.append("| workload | PyTorch f32 | adain f32 | adain f32 / PyTorch f32 | PyTorch bf16 | adain bf16 | **adain bf16 / PyTorch f32** | adain bf16 / PyTorch bf16 |")
out.append("|---|---|---|---|---|---|---|---|")
for w in works:
    tf, af = load("torch", "f32", w), load("adain", "f32", w)
    tb, ab = load("torch", "bf16", w), load("adain", "bf16", w)
    g = lambda r: None if r is None else r["median_s"]
    out.append(f"| {w} | {s(g(tf))} | {s(g(af))} | {ratio(g(af), g(tf))} | {s(g(tb))} | {s(g(ab))} | {ratio(g(ab), g(tf))} | {ratio(g(ab), g(tb))} |")

out.append("\n## Peak memory (resident set of the whole process during the workload, MB)\n")
out.append("| workload | PyTorch f32 | adain f32 | PyTorch bf16 | adain bf16 | adain bf16 / PyTorch f32 |")
out.append("|---|---|---|---|---|---|")
for w in works:
    m = lambda r: None if r is None else r.get("peak_rss_mb")
    tf, af = m(load("torch", "f32", w)), m(load("adain", "f32", w))
    tb, ab = m(load("torch", "bf16", w)), m(load("adain", "bf16", w))
    out.append(f"| {w} | {s(tf)} | {s(af)} | {s(tb)} | {s(ab)} | {ratio(ab, tf)} |")

out.append("\n## adain detail: convolution FLOP rate\n")
out.append("| workload | precision | GFLOP | median s | min-max s | GFLOP/s | % of measured peak |")
out.append("|---|---|---|---|---|---|---|")
for w in works:
    for p in ("f32", "bf16"):
        r = load("adain", p, w)
        if r:
            out.append(f"| {w} | {p} | {r['gflop']:.0f} | {r['median_s']:.3f} | {r['min_s']:.3f}-{r['max_s']:.3f} | {r['gflop_per_s']:.0f} | {r['pct_of_peak']:.0f}% |")

targets = [("stylize_512", "stylize 512^2", 0.5, "median_s"), ("stylize_cached_512", "stylize 512^2, cached style", 0.35, "median_s"),
           ("train_b8_256", "training step 256^2, batch 8", 0.6, "median_s"), ("stylize_2048", "peak memory stylizing 2048^2", 0.5, "peak_rss_mb"),
           ("johnson_512", "Johnson network 512^2 (issue 19)", 0.5, "median_s"), ("johnson_1024", "Johnson network 1024^2 (issue 19)", 0.5, "median_s"),
           ("johnson_train_b4_256", "Johnson training step 256^2, batch 4 (issue 19)", 0.5, "median_s")]
# Only the targets whose workload this run measured.
targets = [t for t in targets if t[0] in works]
out.append("\n## Targets (issues 4 and 19), against PyTorch f32\n")
out.append("| target | bound | adain f32 | adain bf16 | met (best) |")
out.append("|---|---|---|---|---|")
for w, what, bound, key in targets:
    t = load("torch", "f32", w)
    if w == "stylize_cached_512":
        t = load("torch", "f32", "stylize_512")  # PyTorch per image, as the issue frames it
    rs = []
    for p in ("f32", "bf16"):
        a = load("adain", p, w)
        rs.append(None if a is None or t is None or a.get(key) is None or t.get(key) is None else a[key] / t[key])
    best = min([r for r in rs if r is not None], default=None)
    f = lambda r: "-" if r is None else f"{r:.2f}x"
    out.append(f"| {what} | <= {bound}x | {f(rs[0])} | {f(rs[1])} | {'yes' if best is not None and best <= bound else 'no'} |")
if "stylize_cached_512" in works:
    out.append("\nThe cached-style row divides by PyTorch's full per-image stylization (style encoded each time), as the issue's")
    out.append("table frames it: what a user stylizing many photos with one painting pays per image.\n")

# The optimisation rows need PyTorch's run and whichever adain precisions were run
# (`--precisions f32` on a machine without AMX makes no bf16 one).
opt = {k: os.path.join(d, f"optimize-{k}.json") for k in ("adain-f32", "adain-bf16", "torch-f32")}
o = {k: json.load(open(f)) for k, f in opt.items() if os.path.exists(f) and os.path.getsize(f) > 0}
if "torch-f32" in o and len(o) > 1:
    t = o["torch-f32"]
    out.append("## Gatys optimisation (`adain optimize`), 512 px shorter side, L-BFGS (strong Wolfe), 10 iterations\n")
    out.append("An evaluation is one forward and backward pass through VGG-19 to relu4_1 (content and Gram style losses);")
    out.append("an L-BFGS iteration makes one or more. Same image pair, same objective, same thread count.\n")
    out.append("| | iterations | evaluations | s / evaluation | iterations / s | s / evaluation vs PyTorch f32 | a 500-iteration image (estimate) |")
    out.append("|---|---|---|---|---|---|---|")
    for k, label in (("torch-f32", "PyTorch f32"), ("adain-f32", "adain f32"), ("adain-bf16", "adain bf16")):
        if k not in o:
            continue
        r = o[k]
        est = 500 * r["secs_per_iter"]
        rr = "-" if k == "torch-f32" else f"**{r['secs_per_eval'] / t['secs_per_eval']:.2f}x**"
        out.append(f"| {label} | {r['iterations']} | {r['evals']} | {r['secs_per_eval']:.2f} | {r['iters_per_sec']:.2f} | {rr} | {est / 60:.0f} min |")
    sp = "bf16" if load("adain", "bf16", "stylize_512") else "f32"
    st = load("adain", sp, "stylize_512")
    out.append("")
    out.append("For scale, the seeds report about 39 s per image for Gatys's method on a GPU and 0.6 s for a feed-forward")
    out.append("network; on these 2 CPU cores a 500-iteration Gatys image takes the estimate above, and one feed-forward")
    out.append(f"`adain stylize` at 512 takes {st['median_s']:.2f} s ({sp}).\n" if st else "")

# The history and the other records belong to the full run, not to a `--work` subset.
full = "stylize_512" in works
notes = os.path.join(root, "docs", "performance-notes.md")
if full and os.path.exists(notes):
    out.append(open(notes).read())
# The large-image record is made by scripts/bench-large.sh (about 40 minutes), not by this run.
large = os.path.join(root, "docs", "bench-large.md")
if full and os.path.exists(large):
    out.append(open(large).read())
# The GPU record is made on a lent machine by scripts/gpu-train.sh, not by this run.
cuda = os.path.join(root, "docs", "bench-cuda.md")
if full and os.path.exists(cuda):
    out.append(open(cuda).read())
print("\n".join(out))
