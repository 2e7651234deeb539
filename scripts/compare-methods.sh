#!/usr/bin/env bash
# Seed 003's comparison on this machine, in one run: Gatys et al.'s optimisation
# (`adain optimize`), Johnson et al.'s per-style network (`adain stylize --model`)
# and AdaIN with the published decoder, on the same content images at 512 px and
# the style each network was trained on. Prints a markdown table: seconds per
# image and the `adain eval` metrics (same protocol for all three).
#
# Usage: scripts/compare-methods.sh [--contents "00 05 12"] [--iters 100] [--threads 2]
#                                   [--out runs/compare] NET=STYLE [NET=STYLE ...]
#   e.g. scripts/compare-methods.sh weights/johnson-impressionist.safetensors=data/eval/style/styleid_wikiart_27.png
# The seconds of `stylize --model` and AdaIN are eval's in-process mean per image
# (model loaded, style encoded per pair); Gatys's are the wall time of one
# `adain optimize` process over the contents, divided by their count.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
contents="00 05 12" iters=100 threads=2 out=runs/compare
pairs=()
while [ $# -gt 0 ]; do
  case "$1" in
    --contents) contents="$2"; shift 2 ;;
    --iters) iters="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    *=*) pairs+=("$1"); shift ;;
    *) echo "unknown argument $1 (want NET=STYLE)" >&2; exit 2 ;;
  esac
done
[ ${#pairs[@]} -gt 0 ] || { echo "give at least one NET=STYLE" >&2; exit 2; }
cargo build --release --bins -q
adain=target/release/adain
rm -rf "$out"; mkdir -p "$out/content"
for c in $contents; do ln -s "$root/data/eval/content/styleid_coco_$c.png" "$out/content/"; done
n=$(ls "$out/content" | wc -l)
mean() { # mean JSON: prints style_musigma style_gram content_in ssim seconds of the outputs
  python3 -c '
import json, sys
s = json.load(open(sys.argv[1]))["stylized"]
print(" ".join(str(s["mean"][k]) for k in ("style_musigma", "style_gram", "content_in", "ssim")),
      s.get("mean_seconds"))' "$1"
}
rows=()
for p in "${pairs[@]}"; do
  net="${p%%=*}" style="${p#*=}" name=$(basename "${style%.*}")
  mkdir -p "$out/$name/style"; ln -sf "$root/$style" "$out/$name/style/"
  echo "== $name: Gatys, $iters L-BFGS iterations at 512" >&2
  t0=$(date +%s.%N)
  $adain optimize -c "$out/content" -s "$style" -o "$out/$name/gatys" --ext png --size 512 \
    --iters "$iters" --threads "$threads" --quiet
  t1=$(date +%s.%N)
  gatys_s=$(python3 -c "print(($t1 - $t0) / $n)")
  $adain eval -c "$out/content" -s "$out/$name/style" --outputs "$out/$name/gatys" \
    -o "$out/$name/eval-gatys" --threads "$threads" >/dev/null
  echo "== $name: Johnson network $net" >&2
  $adain eval -c "$out/content" -s "$out/$name/style" --model "$net" \
    -o "$out/$name/eval-johnson" --threads "$threads" --save-outputs "$out/$name/johnson" >/dev/null
  echo "== $name: AdaIN, published decoder" >&2
  $adain eval -c "$out/content" -s "$out/$name/style" \
    -o "$out/$name/eval-adain" --threads "$threads" --save-outputs "$out/$name/adain" >/dev/null
  # A contact strip per content: content | style | Gatys | Johnson | AdaIN, 256 px each.
  strips=()
  for c in $contents; do
    f="styleid_coco_${c}_stylized_$name.png"
    ffmpeg -loglevel error -y -i "$out/content/styleid_coco_$c.png" -i "$style" \
      -i "$out/$name/gatys/$f" -i "$out/$name/johnson/$f" -i "$out/$name/adain/$f" \
      -filter_complex "[0]scale=256:256[a];[1]scale=256:256[b];[2]scale=256:256[c];[3]scale=256:256[d];[4]scale=256:256[e];[a][b][c][d][e]hstack=5" \
      "$out/$name/strip-$c.png"
    strips+=(-i "$out/$name/strip-$c.png")
  done
  if [ "$n" -gt 1 ]; then
    ffmpeg -loglevel error -y "${strips[@]}" -filter_complex "vstack=inputs=$n" -q:v 3 "$out/$name/strip.jpg"
  else
    ffmpeg -loglevel error -y "${strips[@]}" -q:v 3 "$out/$name/strip.jpg"
  fi
  read -r ms mg ci ss _ < <(mean "$out/$name/eval-gatys/metrics.json")
  rows+=("| $name | Gatys (\`adain optimize\`, $iters L-BFGS iterations) | $(printf %.1f "$gatys_s") | $(printf %.3g "$ms") | $(printf %.3g "$mg") | $(printf %.3f "$ci") | $(printf %.3f "$ss") |")
  for m in johnson adain; do
    read -r ms mg ci ss sec < <(mean "$out/$name/eval-$m/metrics.json")
    label="Johnson network (\`--model $(basename "$net")\`)"
    [ $m = adain ] && label="AdaIN (published decoder)"
    rows+=("| $name | $label | $(printf %.2f "$sec") | $(printf %.3g "$ms") | $(printf %.3g "$mg") | $(printf %.3f "$ci") | $(printf %.3f "$ss") |")
  done
done
echo "contents: $contents (data/eval/content/styleid_coco_NN.png, 512x512), $threads threads, $(date -u +%F), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo
echo "| style | method | seconds per image | style_musigma | style_gram | content_in | ssim |"
echo "|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
