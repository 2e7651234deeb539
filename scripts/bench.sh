#!/usr/bin/env bash
# Speed against PyTorch, measured in the same run on the same machine:
# stylize at 256 and 512, and one training step (batch 8, 256x256 by default).
# Usage: scripts/bench.sh [--threads N] [--quick]   (--quick: batch 2 at 128)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
threads=2 batch=8 crop=256
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads="$2"; shift 2 ;;
    --quick) batch=2 crop=128; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
[ -x .venv/bin/python ] || { python3 -m venv .venv && .venv/bin/pip install -q torch numpy safetensors; }
cargo build --release --bins -q
ours_s=$(target/release/adain bench --threads "$threads" --json | tail -n1)
ours_t=$(target/release/adain-train bench --threads "$threads" --batch-size "$batch" --crop-size "$crop" --json | tail -n1)
torch=$(.venv/bin/python scripts/bench_torch.py --threads "$threads" --batch-size "$batch" --crop-size "$crop" | tail -n1)
python3 - "$ours_s" "$ours_t" "$torch" "$threads" <<'PY'
import json, sys
ours = {**json.loads(sys.argv[1]), **json.loads(sys.argv[2])}
torch = json.loads(sys.argv[3])
print(f"threads: {sys.argv[4]}")
print(f"{'what':<24}{'adain (s)':>12}{'pytorch (s)':>14}{'adain/pytorch':>15}")
for k in ours:
    if k in torch:
        print(f"{k:<24}{ours[k]:>12.3f}{torch[k]:>14.3f}{ours[k] / torch[k]:>15.2f}")
PY
