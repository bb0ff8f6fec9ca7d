#!/usr/bin/env bash
# The README's test command: notebook tests (slow/cuda cells skipped) then the pytest suite.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1} MPLBACKEND=${MPLBACKEND:-Agg}
# Every temporary folder of the run (the notebooks' mkdtemp()s, pytest's tmp_path, the experiments' work dirs) goes
# under one fresh TMPDIR, removed at the end; A3TUNE_KEEP_TMP=1 keeps it for a look at a failure.
export TMPDIR=$(mktemp -d "${TMPDIR:-/tmp}/a3tune-test.XXXXXX")
if [ -z "${A3TUNE_KEEP_TMP:-}" ]; then trap 'rm -rf "$TMPDIR"' EXIT; else echo "temporary files kept in $TMPDIR"; fi
nbdev_test --n_workers 2
python -m pytest -q tests
