"""Seed 000's "how many iterations": adain eval metrics of `adain optimize --save-every`
stages, plotted against the iteration.

Usage: plot_iterations.py OUT.png ITER=METRICS_JSON [ITER=METRICS_JSON ...]
Each METRICS_JSON is the metrics.json of `adain eval --outputs <that stage's dir>`;
iteration 0 is added from the first file's output = content baseline (--init content).
Needs matplotlib (installed into .venv on first use).
"""
import json
import subprocess
import sys

try:
    import matplotlib
except ImportError:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "matplotlib"])
    import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

out, stages = sys.argv[1], sys.argv[2:]
points = []
for s in stages:
    it, path = s.split("=", 1)
    m = json.load(open(path))
    if not points:
        points.append((0, m["output_is_content"]["mean"]))
    points.append((int(it), m["stylized"]["mean"]))
points.sort(key=lambda p: p[0])
metrics = [("style_gram", "style_gram (lower: closer to the style)", True),
           ("style_musigma", "style_musigma (lower)", True),
           ("content_in", "content_in (lower: closer to the content)", False),
           ("ssim", "SSIM to the content (higher)", False)]
fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
for ax, (key, title, log) in zip(axes, metrics):
    xs = [p[0] for p in points]
    ys = [p[1][key] for p in points]
    ax.plot(xs, ys, "o-")
    if log:
        ax.set_yscale("log")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("L-BFGS iteration")
    ax.grid(alpha=0.3)
fig.tight_layout()
fig.savefig(out, dpi=90)
print(f"wrote {out}")
