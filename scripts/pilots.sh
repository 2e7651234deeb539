#!/usr/bin/env bash
# Short pilot runs that pick the decoder's training recipe (issue 5), compared
# by `adain eval` on a fixed subset of the eval protocol.
#
# Each pilot trains the same compute budget (BUDGET crop-128 steps of batch 8;
# a crop-256 pilot gets a quarter as many steps, as each costs 4x), then its
# decoder is scored on 4 contents x 5 styles at 512. Prints one table row per
# pilot and writes runs/pilots/summary.csv. Reruns resume finished pilots.
#
#   scripts/pilots.sh                  # all pilots, BUDGET=250
#   BUDGET=100 scripts/pilots.sh lr1e-3_sw50
set -euo pipefail
cd "$(dirname "$0")/.."
BUDGET=${BUDGET:-250}
PRECISION=${PRECISION:-bf16}
ROOT=runs/pilots
TRAIN=target/release/adain-train
ADAIN=target/release/adain
[ -x "$TRAIN" ] && [ -x "$ADAIN" ] || cargo build --release

# name | crop | lr | style weight
PILOTS=(
  "lr1e-3_sw50  128 1e-3 50"
  "lr1e-3_sw20  128 1e-3 20"
  "lr3e-4_sw50  128 3e-4 50"
  "c256_lr1e-3_sw50 256 1e-3 50"
  "lr1e-4_sw50  128 1e-4 50"
  "lr3e-4_sw20  128 3e-4 20"
)

SUB=$(bash scripts/eval-subset.sh)   # the 20-pair subset

selected=("$@")
rows=()
for p in "${PILOTS[@]}"; do
  read -r name crop lr sw <<<"$p"
  if [ ${#selected[@]} -gt 0 ] && [[ ! " ${selected[*]} " =~ " $name " ]]; then continue; fi
  steps=$(( crop == 128 ? BUDGET : BUDGET / 4 ))
  run=$ROOT/$name
  args=(--max-iter "$steps" --threads 0)
  if [ -f "$run/eval/metrics.csv" ] && [ "$run/eval/metrics.csv" -nt "$run/decoder.safetensors" ] \
    && [ -f "$run/checkpoints/ckpt_$(printf %07d "$steps").safetensors" ]; then
    :  # trained and scored already
  elif [ -d "$run/checkpoints" ]; then
    "$TRAIN" --resume "$run" "${args[@]}"
  else
    "$TRAIN" --content data/coco --style data/wikiart --out "$run" \
      --crop-size "$crop" --load-size "$crop" --lr "$lr" --style-weight "$sw" \
      --batch-size 8 --save-every 50 --sample-every 100000 --keep 2 \
      --precision "$PRECISION" "${args[@]}"
  fi
  [ "$run/eval/metrics.csv" -nt "$run/decoder.safetensors" ] 2>/dev/null ||
    "$ADAIN" eval --decoder "$run/decoder.safetensors" --content "$SUB/content" \
      --style "$SUB/style" --out "$run/eval" --overwrite --quiet
  mean=$(grep '^stylized,mean' "$run/eval/metrics.csv" | cut -d, -f5-8)
  secs=$(tail -1 "$run/log.jsonl" | sed 's/.*"secs_per_iter":\([0-9.]*\).*/\1/')
  rows+=("$name,$crop,$lr,$sw,$steps,$secs,$mean")
done

header="pilot,crop,lr,style_weight,steps,secs_per_step,style_musigma,style_gram,content_in,ssim"
{
  echo "$header"
  printf '%s\n' "${rows[@]}"
} | tee "$ROOT/summary.csv" | column -t -s,
# The scale: output = content and output = style on the same subset.
grep -E '^output_is_(content|style),mean' "$ROOT/${rows[0]%%,*}/eval/metrics.csv" | cut -d, -f1,5-8 \
  | sed 's/^/baseline /' || true
