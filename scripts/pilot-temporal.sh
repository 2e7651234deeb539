#!/usr/bin/env bash
# Issue 17's decoder pilot: does the compound temporal regulariser
# (`adain-train --temporal-weight`, Wang et al. 2020) make the decoder stable
# by itself? Scores decoders on the first 96 frames of the test clip
# (scripts/make-clip.sh) with plain per-frame AdaIN (`--temporal none`): E_fd
# and the warping error (Farneback, not the flow mode's DIS), the style metrics
# of the sampled frames, and the 20-pair eval subset (scripts/eval-subset.sh).
#   bash scripts/pilot-temporal.sh NAME=DECODER [NAME=DECODER ...]
# Also runs the published decoder with `--temporal flow` for scale. Prints a
# markdown table; outputs under runs/tpilot/.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
B=target/release/adain
[ -x $B ] || cargo build --release --bin adain
style="${STYLE:-data/eval/style/styleid_wikiart_03.png}"
clip=runs/clip/sub.mp4
if [ ! -e $clip ]; then
  [ -e runs/clip/clip.mp4 ] || bash scripts/make-clip.sh runs/clip/clip.mp4
  ffmpeg -v error -y -i runs/clip/clip.mp4 -frames:v 96 -c:v libx264 -crf 12 -an $clip
fi
sub=$(bash scripts/eval-subset.sh)
out=runs/tpilot
mkdir -p $out
rows=()
score() { # NAME DECODER MODE
  local name="$1" dec="$2" mode="$3"
  $B video -c $clip -s "$style" --decoder "$dec" -o $out/$name.mkv --codec ffv1 --overwrite -q \
    --metrics --json $out/$name.json --temporal "$mode"
  $B eval -c "$sub/content" -s "$sub/style" --decoder "$dec" -o $out/eval-$name >/dev/null
  rows+=("$(python3 - "$name" "$mode" "$out" <<'PY'
import json, sys
name, mode, out = sys.argv[1:]
v = json.load(open(f"{out}/{name}.json"))
e = json.load(open(f"{out}/eval-{name}/metrics.json"))["stylized"]["mean"]
print(f"| {name} | `{mode}` | {v['e_fd']:.5f} | {v['e_warp']:.5f} | {v['style']['style_musigma']:.4g} "
      f"| {v['style']['content_in']:.3f} | {e['style_musigma']:.4g} | {e['content_in']:.3f} |")
PY
)")
}
for p in "$@"; do score "${p%%=*}" "${p#*=}" none; done
first="${1#*=}"
score "${1%%=*}-flow" "$first" flow
echo "clip: $clip (96 frames, 640x360), style $(basename "$style"); subset: $sub"
echo
echo "| decoder | mode | E_fd | warping error | clip style_musigma | clip content_in | subset style_musigma | subset content_in |"
echo "|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
