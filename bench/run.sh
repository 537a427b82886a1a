#!/usr/bin/env bash
# Runs the benchmark on ../shared/data/dixon-tum01 (the development scan):
# per-stage times of `analyze` (all default outputs) at 1 and 2 threads,
# compared in the same run with the I/O floor (read + inflate the inputs).
#   bench/run.sh [build/paraspinal]   (uses psp_bench beside it; REPS=5)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(dirname "${1:-build/paraspinal}")/psp_bench
D=${PSP_DATA:-../shared/data}/dixon-tum01
if [ ! -f "$D/water.nii.gz" ]; then
  echo "bench: $D not found; nothing to measure" >&2
  exit 1
fi
"$BIN" "$D/water.nii.gz" "$D/fat.nii.gz" "${REPS:-5}"
