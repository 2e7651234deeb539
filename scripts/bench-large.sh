#!/usr/bin/env bash
# Images of any size: one run of `adain bench`'s large rows, each in its own
# process (so each peak resident memory is its own), written to
# docs/bench-large.md (which scripts/benchmarks_md.py appends to BENCHMARKS.md).
#
#   scripts/bench-large.sh            # 2048^2 whole and tiled, 8K, 20000^2 (about 40 min on 2 cores)
#   scripts/bench-large.sh --no-huge  # without 20000^2
#
# Rows: 2048x2048 with a budget large enough for the whole-image path; the
# same at the default budget (1 GiB: tiles, feature map kept); 7680x4320 at the
# default budget (tiles, encoded twice); 20000x20000 with --max-memory 4GiB
# (its 8-bit picture and output alone are 2.4 GB). 8-bit in and out, a cached
# style, as `adain stylize --content-size 0` on a user's file (minus file I/O).
set -euo pipefail
cd "$(dirname "$0")/.."
huge=1
[ "${1:-}" = --no-huge ] && huge=0
cargo build --release --bin adain -q
tmp=runs/bench-large   # the raw JSON reports stay here
rm -rf "$tmp" && mkdir -p "$tmp"
runs=("whole 2048x2048 --max-memory 64GiB" "tiled 2048x2048" "tiled 7680x4320")
[ "$huge" = 1 ] && runs+=("tiled 20000x20000 --max-memory 4GiB")
i=0
for r in "${runs[@]}"; do
  read -r kind size rest <<<"$r"
  echo "adain bench --large $size $rest" >&2
  # shellcheck disable=SC2086
  target/release/adain bench --threads 2 --only "stylize_large_$size" --large "$size" $rest \
    --json > "$tmp/$i-$kind.json"
  i=$((i + 1))
done
python3 - "$tmp" "$0 $*" > docs/bench-large.md <<'EOF'
import datetime, glob, json, os, sys
d, cmd = sys.argv[1], sys.argv[2]
rows = []
for f in sorted(glob.glob(os.path.join(d, "*.json"))):
    j = json.load(open(f))
    r = j["rows"][0]
    w, h = map(int, r["name"].rsplit("_", 1)[1].split("x"))
    rows.append((os.path.basename(f)[2:-5], w, h, r, j))
rep = rows[0][4]
out = [f"## Large images: stylize at full resolution (`{cmd.strip()}`, {datetime.date.today()})", ""]
out.append(f"One run of the command on {rep['cpu']}, {rep['threads']} threads, f32. Each row is one process; "
           "peak = resident set of the whole process. 8-bit picture in and out, style statistics cached.")
out.append("")
out.append("| image | MP | how (from `adain bench`) | seconds | s / MP | peak MB |")
out.append("|---|---|---|---|---|---|")
per_mp = {}
for kind, w, h, r, _ in rows:
    mp = w * h / 1e6
    per_mp[(kind, w, h)] = r["median_s"] / mp
    how = r["what"].split(", style cached, ")[1].split("; GFLOP")[0]
    out.append(f"| {w}x{h} | {mp:.1f} | {how} | {r['median_s']:.1f} | {r['median_s'] / mp:.2f} | {r['peak_rss_mb']:.0f} |")
base = per_mp.get(("whole", 2048, 2048))
if base:
    out.append("")
    out.append("Time per megapixel against the whole-image path at 2048x2048:")
    for (kind, w, h), v in per_mp.items():
        if kind == "tiled":
            out.append(f"- {w}x{h} tiled: {v / base:.2f}x")
print("\n".join(out) + "\n")
EOF
cat docs/bench-large.md
