"""Loss curves of a decoder's whole lineage: several adain-train logs laid end to
end (a run started with --init-decoder counts its steps from 0, so each later log
is shifted by the steps before it). Each logged point is drawn (log scale), with
a vertical line where one run hands over to the next.

usage: python3 scripts/plot_losses.py OUT.png LABEL=RUN/log.jsonl[:MAX_ITER] ...
e.g.   python3 scripts/plot_losses.py docs/main-run-loss.png \
           "CPU, 2 cores=runs/main/log.jsonl:2000" "H200=runs/gpu1/log2.jsonl"
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    out, specs = sys.argv[1], sys.argv[2:]
    fig, ax = plt.subplots(figsize=(9, 4.8), dpi=100)
    offset = 0
    first = True
    for spec in specs:
        label, path = spec.split("=", 1)
        limit = None
        if ":" in path:
            path, limit = path.rsplit(":", 1)
            limit = int(limit)
        rows = [json.loads(line) for line in open(path)]
        rows = [r for r in rows if limit is None or r["iter"] <= limit]
        if not rows:
            sys.exit(f"{path}: no records")
        x = [offset + r["iter"] for r in rows]
        for key, colour in (("loss_content", "tab:blue"), ("loss_style", "tab:red"), ("loss", "black")):
            name = {"loss_content": "content", "loss_style": "style", "loss": "total"}[key]
            ax.plot(x, [r[key] for r in rows], color=colour, lw=0.8, label=name if first else None)
        if not first:
            ax.axvline(offset, color="grey", ls="--", lw=1)
        ax.text(offset + 10, 0.98, label, transform=ax.get_xaxis_transform(), va="top", fontsize=9, color="dimgrey")
        offset = x[-1]
        first = False
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss (log scale)")
    ax.set_title("AdaIN training losses")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="center right")
    fig.tight_layout()
    fig.savefig(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
