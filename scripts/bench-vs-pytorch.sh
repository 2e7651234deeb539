#!/usr/bin/env bash
# Speed and memory against PyTorch, measured in one run on this machine, and
# BENCHMARKS.md written from it. Each workload runs in its own process, adain
# and PyTorch interleaved (so drift of the machine hits both), same thread count,
# same architecture and weights file.
#
# Usage: scripts/bench-vs-pytorch.sh [--threads N] [--quick] [--out FILE]
#                                    [--work "W1 W2 ..."] [--precisions "f32 bf16"]
#   --quick: 256 and 512 only, training at batch 2 (a smoke run; not for the record)
#   --work: only these workloads (names as in `adain bench`, e.g. train_b8_256)
#   --precisions: f32 alone on a CPU without AMX, where adain's bf16 is f32 anyway
# Johnson et al.'s network: johnson_512 johnson_1024 johnson_train_b4_256 (in the full run;
# alone: --work "johnson_512 johnson_1024 johnson_train_b4_256")
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
cmdline="$0 $*"
threads=2 out=BENCHMARKS.md quick=0 only="" precisions="f32 bf16"
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads="$2"; shift 2 ;;
    --quick) quick=1; shift ;;
    --out) out="$2"; shift 2 ;;
    --work) only="$2"; shift 2 ;;
    --precisions) precisions="$2"; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
if [ "$quick" = 1 ]; then
  work="stylize_256 stylize_512 stylize_cached_512 train_b2_256"
else
  work="stylize_256 stylize_512 stylize_cached_512 stylize_1024 stylize_2048 train_b8_256"
  work="$work johnson_512 johnson_1024 johnson_train_b4_256"
fi
[ -n "$only" ] && work="$only"
[ -x .venv/bin/python ] || { python3 -m venv .venv && .venv/bin/pip install -q torch numpy safetensors; }
cargo build --release --bins -q
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for w in $work; do
  b=8 size=256 jb=4
  if [[ $w == train_b* ]]; then b=${w#train_b}; b=${b%%_*}; size=${w##*_}; fi
  if [[ $w == johnson_train_b* ]]; then jb=${w#johnson_train_b}; jb=${jb%%_*}; size=${w##*_}; fi
  for p in $precisions; do
    echo "adain $w ($p)" >&2
    target/release/adain bench --threads "$threads" --precision "$p" --only "$w" \
      --sizes "${w##*_}" --johnson-sizes "${w##*_}" --batch-size "$b" --johnson-batch-size "$jb" \
      --train-size "$size" --json > "$tmp/adain-$p-$w.json"
    echo "pytorch $w ($p)" >&2
    flag=""; [ "$p" = bf16 ] && flag="--bf16"
    .venv/bin/python scripts/bench_torch.py --threads "$threads" --only "$w" $flag \
      | tail -n1 > "$tmp/torch-$p-$w.json"
  done
done
# Gatys optimisation (adain optimize) at 512: 10 L-BFGS iterations, one eval pair.
c=$(ls data/eval/content/*.png data/eval/content/*.jpg 2>/dev/null | head -n1 || true)
s=$(ls data/eval/style/*.png data/eval/style/*.jpg 2>/dev/null | head -n1 || true)
if [ -n "$c" ] && [ -n "$s" ] && [ "$quick" = 0 ] && [ -z "$only" ]; then
  for p in $precisions; do
    echo "adain optimize 512 ($p)" >&2
    target/release/adain optimize -c "$c" -s "$s" -o "$tmp/opt-$p.png" --overwrite --size 512 \
      --iters 10 --threads "$threads" --precision "$p" --json -q | tail -n1 > "$tmp/optimize-adain-$p.json"
  done
  echo "pytorch optimize 512 (f32)" >&2
  .venv/bin/python scripts/bench_optimize_torch.py -c "$c" -s "$s" --size 512 --iters 10 \
    --threads "$threads" | tail -n1 > "$tmp/optimize-torch-f32.json"
fi
.venv/bin/python scripts/benchmarks_md.py "$tmp" "$threads" "$cmdline" > "$out.tmp"
mv "$out.tmp" "$out"
echo "wrote $out" >&2
