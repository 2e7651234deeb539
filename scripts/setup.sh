#!/usr/bin/env bash
# Set-up on a fresh machine: link the shared data (training and eval; optional:
# the weights ship in weights/), build the release binaries. Then
# `target/release/adain stylize -c examples/photo.jpg -s examples/painting.jpg`.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
echo "linking shared data (only training and the eval protocol need it):"
bash scripts/link-shared.sh
echo "system packages (ffmpeg, OpenCV, Chromium; only the missing ones):"
bash scripts/system-deps.sh
echo "building release binaries (several minutes the first time)..."
cargo build --release --bins
echo "done: target/release/adain and target/release/adain-train"
echo "try: target/release/adain stylize -c examples/photo.jpg -s examples/painting.jpg"
[ -f weights/decoder.safetensors ] ||
  echo "note: no weights/decoder.safetensors: train one with adain-train (README.md, 'Training')"
