"""Compare `adain eval` reports on the pairs they have in common.

Usage: compare_reports.py NAME=REPORT_DIR [NAME=REPORT_DIR ...]

Each REPORT_DIR holds the metrics.csv of an `adain eval` run (self-stylization or
`--outputs` of any tool). The per-pair metrics do not depend on which other pairs
a run scored, so the means over the pairs every report has are a like-for-like
comparison even when one tool was scored on the full protocol and another on a
subset. Prints a markdown table: one row per report, then the two baselines
(output = content, output = style) of the first report on the same pairs.
"""
import csv
import sys
from collections import defaultdict

METRICS = ["style_musigma", "style_gram", "content_in", "ssim"]


def load(path):
    rows = defaultdict(dict)  # set -> (content, style) -> metrics
    with open(f"{path}/metrics.csv") as f:
        for r in csv.DictReader(f):
            if r["row"] != "pair":
                continue
            rows[r["set"]][(r["content"], r["style"])] = [float(r[m]) for m in METRICS]
    return rows


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    reports = []
    for arg in sys.argv[1:]:
        name, path = arg.split("=", 1)
        reports.append((name, load(path)))
    common = set.intersection(*(set(r["stylized"]) for _, r in reports))
    if not common:
        sys.exit("the reports have no pair in common")
    n_c = len({c for c, _ in common})
    n_s = len({s for _, s in common})
    print(f"{len(common)} pairs in common ({n_c} contents x {n_s} styles)\n")
    print("| | " + " | ".join(METRICS) + " |")
    print("|---" * (len(METRICS) + 1) + "|")

    def row(name, table):
        means = [sum(table[p][i] for p in common) / len(common) for i in range(len(METRICS))]
        cells = [f"{m:.4g}" if i < 2 else f"{m:.3f}" for i, m in enumerate(means)]
        print(f"| {name} | " + " | ".join(cells) + " |")

    for name, r in reports:
        row(name, r["stylized"])
    first = reports[0][1]
    row("output = content", first["output_is_content"])
    row("output = style", first["output_is_style"])


if __name__ == "__main__":
    main()
