#!/usr/bin/env bash
# Links the shared encoder weights and data into weights/ and data/ (never copies
# them: they stay out of git). SHARED=/path/to/shared overrides ../shared.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
shared="$(cd "${SHARED:-$root/../shared}" 2>/dev/null && pwd || true)"

link() { # link TARGET NAME
  local target="$1" name="$2"
  if [ -e "$name" ]; then
    echo "  $name: present"
  elif [ -n "$shared" ] && [ -e "$target" ]; then
    ln -sfn "$target" "$name"
    echo "  $name -> $target"
  else
    return 1
  fi
}

link "$shared/weights/vgg19-relu4_1.safetensors" weights/vgg19-relu4_1.safetensors ||
  echo "  missing weights/vgg19-relu4_1.safetensors: see weights/README.md for where it comes from"
link "$shared/data/train/content" data/coco || echo "  missing data/coco (photos): see data/README.md"
link "$shared/data/train/style" data/wikiart || echo "  missing data/wikiart (paintings): see data/README.md"
link "$shared/data/eval" data/eval || true
