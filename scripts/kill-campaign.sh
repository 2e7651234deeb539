#!/usr/bin/env bash
# The kill campaign of docs/reliability.md: adain-train SIGKILLed at KILLS
# moments (every third one aimed inside a checkpoint save, held open by the
# test-only ADAIN_FAULT_COMMIT_DELAY_MS hook), resumed after each; the final
# decoder must equal an uninterrupted run's bit for bit. The logic is the
# `kill_campaign` test of tests/reliability.rs (the suite runs it with 6 kills).
#   scripts/kill-campaign.sh [--kills N] [--seed S] [--out FILE]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
kills=100 seed=21 out=docs/kill-campaign.txt
while [ $# -gt 0 ]; do
  case "$1" in
    --kills) kills="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    *) echo "usage: $0 [--kills N] [--seed S] [--out FILE]" >&2; exit 2 ;;
  esac
done
# the same build as scripts/test.sh (so nothing is rebuilt after a test run)
features="${FEATURES-mpi}"
mkdir -p "$(dirname "$out")"
start=$(date +%s)
ADAIN_KILLS="$kills" ADAIN_KILL_SEED="$seed" ADAIN_KILL_REPORT="$out.tmp" \
  cargo test --locked ${features:+--features "$features"} --test reliability kill_campaign -- --nocapture
{
  echo "# scripts/kill-campaign.sh --kills $kills --seed $seed ($(date -u +%F), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'))"
  echo
  cat "$out.tmp"
  echo "wall time: $(( $(date +%s) - start )) s"
} > "$out"
rm -f "$out.tmp"
echo "wrote $out"
