#!/usr/bin/env bash
# Links the shared training and eval data into data/ (never copies it: it stays
# out of git). The encoder ships in weights/ itself (weights/README.md).
# SHARED=/path/to/shared overrides ../shared.
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

link "$shared/data/train/content" data/coco || echo "  missing data/coco (photos): see data/README.md"
link "$shared/data/train/style" data/wikiart || echo "  missing data/wikiart (paintings): see data/README.md"
link "$shared/data/eval" data/eval || true
