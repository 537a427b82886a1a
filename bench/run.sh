#!/usr/bin/env bash
# Runs the benchmark on ../shared/data/dixon-tum01 (the development scan).
#   bench/run.sh [build/paraspinal]   (uses build/psp_bench beside it)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(dirname "${1:-build/paraspinal}")/psp_bench
D=${PSP_DATA:-../shared/data}/dixon-tum01
if [ ! -f "$D/water.nii.gz" ]; then
  echo "bench: $D not found; nothing to measure" >&2
  exit 1
fi
for t in 1 2; do
  echo "== OMP_NUM_THREADS=$t"
  OMP_NUM_THREADS=$t "$BIN" "$D/water.nii.gz" "$D/fat.nii.gz" "$D/labels_manual.nii.gz" lpm "${REPS:-5}"
done
