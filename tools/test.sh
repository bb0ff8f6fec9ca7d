#!/usr/bin/env bash
# The README's test command: notebook tests (slow/cuda cells skipped) then the pytest suite.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1} MPLBACKEND=${MPLBACKEND:-Agg}
nbdev_test --n_workers 2
python -m pytest -q tests
