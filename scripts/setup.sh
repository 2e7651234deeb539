#!/usr/bin/env bash
# Set-up on a fresh machine: link the shared weights and data, build the release
# binaries. Then `target/release/adain --help` and `target/release/adain-train --help`.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
echo "linking shared weights and data:"
bash scripts/link-shared.sh
echo "building release binaries (several minutes the first time)..."
cargo build --release --bins
echo "done: target/release/adain and target/release/adain-train"
[ -f weights/decoder.safetensors ] ||
  echo "note: no weights/decoder.safetensors: train one with adain-train (README.md, 'Training')"
