#!/usr/bin/env bash
# The 20-pair subset of the eval protocol that pilots and training trends are
# scored on (scripts/pilots.sh, scripts/eval-trend.sh): eval contents 00-03 x
# every 8th eval painting, as links under runs/pilots/subset/{content,style}.
# Prints the directory. Run from the project root.
set -euo pipefail
SUB=runs/pilots/subset
mkdir -p "$SUB/content" "$SUB/style"
for f in $(ls data/eval/content/*.png | head -4); do ln -sf "$PWD/$f" "$SUB/content/"; done
for f in $(ls data/eval/style/*.png | awk 'NR % 8 == 1'); do ln -sf "$PWD/$f" "$SUB/style/"; done
echo "$SUB"
