#!/usr/bin/env bash
# Runs the benchmark on ../shared/data/dixon-tum01 (the development scan):
# per-stage times of `analyze` (all default outputs) at 1 and 2 threads,
# compared in the same run with the I/O floor (read + inflate the inputs);
# then the batch throughput over a cohort of phantoms of the same size.
#   bench/run.sh [build/paraspinal]   (uses psp_bench beside it; REPS=5,
#   BATCH_N=8 phantoms, BATCH_N=0 skips the batch part)
set -euo pipefail
cd "$(dirname "$0")/.."
PSP=${1:-build/paraspinal}
BIN=$(dirname "$PSP")/psp_bench
D=${PSP_DATA:-../shared/data}/dixon-tum01
if [ ! -f "$D/water.nii.gz" ]; then
  echo "bench: $D not found; nothing to measure" >&2
  exit 1
fi
"$BIN" "$D/water.nii.gz" "$D/fat.nii.gz" "${REPS:-5}"

N=${BATCH_N:-8}
[ "$N" -gt 0 ] || exit 0
T=$(mktemp -d "${TMPDIR:-/tmp}/psp-bench.XXXXXX")
trap 'rm -rf "$T"' EXIT
# a cohort of N noisy phantoms on the grid of dixon-tum01 (400 x 400 x 29,
# 1.0185 x 1.0185 x 4 mm; uint16 water and fat, Rayleigh background, so the
# noise-bias correction runs, unlike on tum01's masked background)
for i in $(seq 1 "$N"); do
  s=$(printf 'sub-%02d' "$i")
  "$PSP" phantom -o "$T/in/$s/anat" --prefix "${s}" --seed "$i" --dims 400,400,29 \
    --spacing 1.0185,1.0185,4 >/dev/null
done
cores=$(nproc 2>/dev/null || echo 2)
jobs=$((cores < N ? cores : N))
t0=$(date +%s.%N)
"$PSP" batch --discover "$T/in" -o "$T/out" --jobs "$jobs" -q
t1=$(date +%s.%N)
awk -v n="$N" -v a="$t0" -v b="$t1" -v j="$jobs" 'BEGIN {
  printf "batch: %d phantoms of 400 x 400 x 29, --jobs %d: %.2f s, %.2f scans/s (target >= 2)\n",
    n, j, b - a, n / (b - a) }'
