#!/usr/bin/env bash
# Eval figures against training steps (issue 5): scores every checkpoint of a
# run with `adain eval` on a fixed subset of the eval protocol (the one
# scripts/pilots.sh uses: 4 contents x 5 styles at 512), appends a row per new
# checkpoint to RUN/eval-trend.csv and plots RUN/eval-trend.png. Checkpoints
# already scored are skipped, so it can run again as training goes on.
#
#   scripts/eval-trend.sh runs/main            # bf16 stylization (fast)
#   PRECISION=f32 scripts/eval-trend.sh runs/main
set -euo pipefail
cd "$(dirname "$0")/.."
run=${1:?usage: scripts/eval-trend.sh RUN_DIR}
PRECISION=${PRECISION:-bf16}
ADAIN=target/release/adain
[ -x "$ADAIN" ] || cargo build --release --bin adain
SUB=$(bash scripts/eval-subset.sh)   # the 20-pair subset

csv=$run/eval-trend.csv
[ -f "$csv" ] || echo "step,style_musigma,style_gram,content_in,ssim" > "$csv"
for ck in "$run"/checkpoints/ckpt_*.safetensors; do
  step=$(basename "$ck" .safetensors); step=$((10#${step#ckpt_}))
  grep -q "^$step," "$csv" && continue
  rep=$run/eval-trend/$step
  "$ADAIN" eval --decoder "$ck" --content "$SUB/content" --style "$SUB/style" \
    --out "$rep" --precision "$PRECISION" --overwrite --quiet > /dev/null
  echo "$step,$(grep '^stylized,mean' "$rep/metrics.csv" | cut -d, -f5-8)" >> "$csv"
done
{ head -1 "$csv"; tail -n +2 "$csv" | sort -t, -k1,1n; } > "$csv.tmp" && mv "$csv.tmp" "$csv"
column -t -s, "$csv"
args=()
for d in "$run"/eval-trend/*/; do args+=("$(basename "$d")=$d/metrics.json"); done
.venv/bin/python scripts/plot_iterations.py --training "$run/eval-trend.png" "${args[@]}"
