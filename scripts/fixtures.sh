#!/usr/bin/env bash
# Regenerate the golden test fixtures under tests/fixtures/ (see the docstring of
# scripts/make_fixtures.py for the contract). Python is only used here.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
    .venv/bin/pip install torch numpy safetensors
fi
.venv/bin/python scripts/make_fixtures.py "$@"
# adain optimize: objective, gradients and L-BFGS steps (its docstring is the contract)
.venv/bin/python scripts/make_optimize_fixtures.py
# Johnson et al.'s network: forward, .pth import, objective and 3 Adam steps (its docstring is the contract)
.venv/bin/python scripts/johnson_torch.py
