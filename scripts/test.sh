#!/usr/bin/env bash
# The test suite: links the shared data (tests that need real photos use it),
# then runs every test. Golden fixtures come from scripts/fixtures.sh.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bash scripts/link-shared.sh >/dev/null
bash scripts/system-deps.sh
if [ ! -e weights/vgg19-relu4_1.safetensors ] && [ -z "${ADAIN_WEIGHTS:-}" ]; then
  echo "error: weights/vgg19-relu4_1.safetensors is missing (it ships in git: see weights/README.md)" >&2
  exit 1
fi
# --features mpi: the data-parallel training tests run under a real mpirun.
exec cargo test --locked --features mpi "$@"
