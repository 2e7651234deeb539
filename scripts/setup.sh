#!/usr/bin/env bash
# One-time set-up on a fresh machine: build the release binaries and link the
# shared encoder weights and training data into weights/ and data/.
# Usage: scripts/setup.sh   (from anywhere; SHARED=/path/to/shared to override)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
shared="${SHARED:-$root/../shared}"

link() { # link TARGET NAME: a relative-safe symlink unless NAME already exists
  local target="$1" name="$2"
  if [ -e "$name" ] || [ -L "$name" ]; then
    echo "  $name: already there"
  elif [ -e "$target" ]; then
    ln -s "$(cd "$(dirname "$target")" && pwd)/$(basename "$target")" "$name"
    echo "  $name -> $target"
  else
    return 1
  fi
}

echo "weights:"
if ! link "$shared/weights/vgg19-relu4_1.safetensors" weights/vgg19-relu4_1.safetensors; then
  echo "  missing: the VGG-19 encoder (conv1_1..conv4_1) as weights/vgg19-relu4_1.safetensors."
  echo "  Convert the reference project's vgg_normalised.pth with 'adain convert', or see weights/README.md."
fi
echo "data:"
link "$shared/data/train/content" data/coco || echo "  missing: photos for data/coco (see data/README.md)"
link "$shared/data/train/style" data/wikiart || echo "  missing: paintings for data/wikiart (see data/README.md)"
link "$shared/data/eval" data/eval || true

echo "building release binaries (a few minutes the first time)..."
cargo build --release --bins
echo "done: target/release/adain and target/release/adain-train"
[ -f weights/decoder.safetensors ] || echo "note: no weights/decoder.safetensors yet: train one with adain-train (see README.md)"
